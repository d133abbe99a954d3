import math

import numpy as np

from crystal_pipeline.evaluation import registry
from crystal_pipeline.warehouse import Warehouse


def one_hot(classes, n=10, p=0.91):
    probs = np.full((len(classes), n), (1 - p) / (n - 1), dtype=np.float32)
    probs[np.arange(len(classes)), np.asarray(classes) - 1] = p
    return probs


def test_score_counts_crystal_view_and_threshold():
    truth = np.array([1, 1, 2, 3, 5, 7, 3])
    predicted = np.array([1, 2, 2, 3, 2, 7, 5])  # 4 of 7 right; crystals 3,5,7,3 -> has-crystal hits 3 of 4
    s = registry.score(truth, one_hot(predicted))
    assert math.isclose(s.val_accuracy, 4 / 7)
    assert math.isclose(s.crystal_recall, 3 / 4)
    assert s.images == 7 and 0 <= s.crystal_threshold <= 1


def test_promotion_rule():
    base = registry.Scores(0.80, 0.70, 0.9, 0.3, 100)
    assert registry.not_worse(base, None)[0]
    assert registry.not_worse(registry.Scores(0.80, 0.70, 0.8, 0.1, 100), base)[0]  # equal is not worse
    ok, why = registry.not_worse(registry.Scores(0.85, 0.60, 0.95, 0.2, 100), base)
    assert not ok and "crystal_recall" in why
    ok, why = registry.not_worse(registry.Scores(0.79, 0.90, 0.95, 0.2, 100), base)
    assert not ok and "val_accuracy" in why


def test_register_keeps_exactly_one_production_model(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.ensure_schema()
    scores = registry.Scores(0.8, 0.7, float("nan"), 0.3, 10)
    for i, promote in enumerate([True, False, True]):
        artifact = tmp_path / f"m{i}.pt"
        artifact.write_bytes(bytes([i]) * 10)
        version = registry.new_model_version(artifact)
        registry.register(wh, model_version=f"{version}-{i}", preset="smoke", resolution=32, path=artifact,
                          trained_on="synthetic", scores=scores, promote=promote)
    rows = wh.query_df("SELECT model_version, is_production, crystal_auc FROM models ORDER BY model_version")
    assert rows["is_production"].sum() == 1
    assert rows.loc[rows["is_production"], "model_version"].item().endswith("-2")
    assert rows["crystal_auc"].isna().all()  # NaN stored as NULL, not as a number
    assert registry.production_model(wh)["model_version"].endswith("-2")


def test_model_row_by_version_or_production_and_clear_errors(tmp_path):
    import pytest

    wh = Warehouse(tmp_path / "w.duckdb")
    wh.ensure_schema()
    with pytest.raises(LookupError, match="no production model"):
        registry.model_row(wh)
    artifact = tmp_path / "m.pt"
    artifact.write_bytes(b"x")
    registry.register(wh, model_version="v1", preset="smoke", resolution=32, path=artifact, trained_on="synthetic",
                      scores=registry.Scores(0.5, 0.5, 0.5, 0.5, 1), promote=True)
    assert registry.model_row(wh)["model_version"] == "v1" == registry.model_row(wh, "v1")["model_version"]
    with pytest.raises(LookupError, match="'v2' is not in the models table"):
        registry.model_row(wh, "v2")


def test_load_registered_checks_the_sha256_before_torch_reads_the_file(tmp_path, monkeypatch):
    import pytest
    import torch

    from crystal_pipeline.model import CrystalNet, save_artifact

    wh = Warehouse(tmp_path / "w.duckdb")
    wh.ensure_schema()
    path = save_artifact(tmp_path / "m.pt", CrystalNet(num_classes=10, resolution=32, augment_params=None))
    registry.register(wh, model_version="v1", preset="smoke", resolution=32, path=path, trained_on="synthetic",
                      scores=registry.Scores(0.5, 0.5, 0.5, 0.5, 1), promote=True)
    row = registry.model_row(wh)
    assert registry.load_registered(row, "cpu").resolution == 32
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # one bit of the weights
    path.write_bytes(bytes(data))

    def never(*args, **kwargs):
        raise AssertionError("torch.load ran on a file whose sha256 does not match its row")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(registry.ModelIntegrityError, match="model v1: .*the registry says .*not loaded"):
        registry.load_registered(row, "cpu")
    # Registering the same file again is a no-op: the row of the first registration holds it.
    assert registry.register(wh, model_version="v1-again", preset="smoke", resolution=32, path=path,
                             trained_on="synthetic", scores=registry.Scores(0.5, 0.5, 0.5, 0.5, 1),
                             promote=False) == "v1-again"
    assert registry.register(wh, model_version="v1-third", preset="smoke", resolution=32, path=path,
                             trained_on="synthetic", scores=registry.Scores(0.5, 0.5, 0.5, 0.5, 1),
                             promote=True) == "v1-again"
    assert int(wh.scalar("SELECT count(*) FROM models")) == 2 and registry.production_model(wh)["model_version"] == "v1"
