"""promotion.promote: version, re-score production on today's split, decide, register.

Every model here answers one class whatever the image (zero output weights, one large
bias), so its accuracy on the validation split is exactly that class's share and each
setup has exactly one right outcome.
"""

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from crystal_pipeline.classes import class_name, has_crystal
from crystal_pipeline.evaluation import promotion, registry
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.model import ARTIFACT_FORMAT, CrystalNet
from crystal_pipeline.tensors import preparation
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import images as image_table
from crystal_pipeline.warehouse import labels as label_table
from crystal_pipeline.warehouse.images import IMAGE_COLUMNS

# Validation: 6 clear (1), 3 precipitate (2), 1 crystal (3). Majority: clear, 0.6.
VAL = [1] * 6 + [2] * 3 + [3]
TRAIN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


@pytest.fixture
def world(tmp_path):
    """A warehouse with labelled images and their r32 tensors, as the prepare group leaves them."""
    layout = DataLayout.under(tmp_path / "data")
    wh = Warehouse(layout.warehouse)
    wh.ensure_schema()
    rng = np.random.default_rng(0)
    rows, labels = [], []
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for i, (split, class_id) in enumerate([("val", c) for c in VAL] + [("train", c) for c in TRAIN]):
        path = tmp_path / "images" / f"W{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
        image_id = f"T/W{i:02d}"
        rows.append((image_id, "T", None, 96, f"W{i:02d}", i, 1, i + 1, str(path), None, 40, 40, "L", "ok", None,
                     "archive", path.stat().st_size, path.stat().st_mtime_ns, now, 1, 1, "visible"))
        labels.append((image_id, class_id, class_name(class_id), has_crystal(class_id), 3, 1.0, split))
    image_table.upsert_images(wh, pd.DataFrame(rows, columns=list(IMAGE_COLUMNS)))
    label_table.replace_consensus_labels(wh, pd.DataFrame(labels, columns=list(label_table.LABEL_COLUMNS)))
    preparation.prepare_resolution(wh, layout, 32, workers=1)
    return wh, layout


def constant_model(path, class_id: int):
    """A CrystalNet artifact that gives class ``class_id`` probability ~1 for every image."""
    model = CrystalNet(num_classes=10, resolution=32, augment_params=None)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.fill_(-20.0)
        model.out.bias[class_id - 1] = 20.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": ARTIFACT_FORMAT, "state_dict": model.state_dict(), "preset": "test",
                "model_config": {"num_classes": 10, "resolution": 32, "cn_eps": 0.1, "augment": None}}, path)
    return path


def scores_of(class_id: int) -> registry.Scores:
    """What the caller passes: the new model's scores on today's validation split."""
    probs = np.zeros((len(VAL), 10), dtype=np.float32)
    probs[:, class_id - 1] = 1.0
    return registry.score(np.array(VAL), probs)


# The tests of the not-worse rule switch the floor off (these one-class models sit at or
# below the majority rate, under any real floor); the floor's own tests use the real one.
NO_FLOOR = registry.AccuracyFloor(0.0, 0.6, "test of the not-worse rule: no floor")


def promote(wh, layout, tmp_path, class_id: int, name: str, when: int, floor=NO_FLOOR):
    staged = constant_model(tmp_path / "staging" / name / "model.pt", class_id)
    return promotion.promote(wh, layout, staged, scores_of(class_id), floor=floor, preset="test", resolution=32,
                             trained_on="synthetic", device="cpu", workers=1,
                             now=datetime(2024, 1, 1, 0, 0, when, tzinfo=timezone.utc))


def production_version(wh):
    return registry.production_model(wh)["model_version"]


def test_first_model_becomes_production_and_its_file_moves(world, tmp_path):
    wh, layout = world
    decision = promote(wh, layout, tmp_path, 1, "first", 0)
    assert decision.promoted and decision.reason.startswith("first model")
    assert decision.production_version is None and decision.production_scores is None
    assert decision.path == layout.model_path(decision.model_version) and decision.path.is_file()
    assert not (tmp_path / "staging" / "first" / "model.pt").exists()
    assert production_version(wh) == decision.model_version
    assert registry.artifact_problem(registry.model_row(wh)) is None  # registered sha256 is the file's


def test_worse_model_is_kept_out_and_not_worse_model_is_promoted(world, tmp_path):
    wh, layout = world
    first = promote(wh, layout, tmp_path, 1, "first", 0)  # accuracy 0.6, crystal recall 0
    worse = promote(wh, layout, tmp_path, 2, "worse", 1)  # accuracy 0.3
    assert not worse.promoted and "val_accuracy 0.3000 < production's 0.6000" in worse.reason
    assert production_version(wh) == first.model_version
    assert worse.path.is_file()  # registered, kept, not production
    assert registry.model_row(wh, worse.model_version)["is_production"] == False  # noqa: E712
    equal = promote(wh, layout, tmp_path, 1, "equal", 2)  # equal on both scores: not worse
    assert equal.promoted and equal.reason.startswith("promoted")
    assert production_version(wh) == equal.model_version
    assert int(wh.scalar("SELECT count(*) FROM models WHERE is_production")) == 1


def test_production_is_rescored_on_todays_split_not_trusted(world, tmp_path):
    wh, layout = world
    # The production model's row claims 0.99 accuracy (an older, easier split); on today's
    # split it answers "clear" and scores 0.6. A new model at 0.6 must therefore be promoted.
    old = constant_model(layout.models_dir / "old" / "model.pt", 1)
    registry.register(wh, model_version="old", preset="test", resolution=32, path=old, trained_on="synthetic",
                      scores=registry.Scores(0.99, 0.99, 0.99, 0.5, 10), promote=True)
    decision = promote(wh, layout, tmp_path, 1, "new", 0)
    assert decision.production_version == "old"
    assert decision.production_scores.images == len(VAL)
    assert decision.production_scores.val_accuracy == pytest.approx(0.6)
    assert decision.production_scores.crystal_recall == 0.0
    assert decision.promoted and production_version(wh) == decision.model_version


def test_production_is_rescored_on_the_split_of_today_after_labels_change(world, tmp_path):
    wh, layout = world
    first = promote(wh, layout, tmp_path, 1, "first", 0)  # 0.6 on the ten validation images
    # One clear validation image moves to training: today's split has 9 images, 5 clear.
    with wh.transaction() as con:
        con.execute("UPDATE consensus_labels SET split = 'train' WHERE image_id = 'T/W00'")
    probs = np.zeros((9, 10), dtype=np.float32)
    probs[:, 0] = 1.0
    today = registry.score(np.array(VAL[1:]), probs)  # the same "clear" answer: 5/9
    staged = constant_model(tmp_path / "staging" / "again" / "model.pt", 1)
    decision = promotion.promote(wh, layout, staged, today, floor=NO_FLOOR, preset="test", resolution=32,
                                 trained_on="synthetic",
                                 device="cpu", workers=1)
    assert decision.production_version == first.model_version
    assert decision.production_scores.images == 9
    assert decision.production_scores.val_accuracy == pytest.approx(5 / 9)
    assert decision.promoted  # 5/9 against 5/9; against the stale 0.6 it would have been kept


def test_promotion_writes_the_temperature_and_calibrated_threshold_into_artifact_and_row(world, tmp_path):
    from crystal_pipeline.model import calibration_of, load_artifact

    wh, layout = world
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(VAL), 10))
    logits[np.arange(len(VAL)), np.array(VAL) - 1] += 1.0
    raw = np.exp(6 * logits) / np.exp(6 * logits).sum(axis=1, keepdims=True)  # over-confident
    scores = registry.calibrate(np.array(VAL), raw)
    assert scores.temperature > 1.0  # softened
    staged = constant_model(tmp_path / "staging" / "cal" / "model.pt", 1)
    decision = promotion.promote(wh, layout, staged, scores, floor=NO_FLOOR, preset="test", resolution=32,
                                 trained_on="synthetic",
                                 device="cpu", workers=1)
    meta = load_artifact(decision.path)
    assert calibration_of(meta) == (pytest.approx(scores.temperature), pytest.approx(scores.crystal_threshold))
    row = registry.model_row(wh, decision.model_version)
    assert row["temperature"] == pytest.approx(scores.temperature)
    assert row["crystal_threshold"] == pytest.approx(scores.crystal_threshold)
    assert registry.artifact_problem(row) is None  # hashed after the calibration was written
    # The threshold is on calibrated probabilities: the one crystal keeps its calibrated crystal_prob.
    calibrated = registry.score(np.array(VAL), raw, scores.temperature)
    assert calibrated.crystal_threshold == pytest.approx(scores.crystal_threshold)
    assert scores.crystal_threshold != pytest.approx(registry.score(np.array(VAL), raw).crystal_threshold)


# -- issue 18: the floor before promotion, an unusable production, and kills at every step ------
REAL_FLOOR = registry.floor_for(np.array(VAL))  # majority 0.6 -> 0.6 + 0.25 x 0.4 = 0.7


def test_a_first_model_below_the_floor_is_registered_but_never_production(world, tmp_path):
    wh, layout = world
    assert REAL_FLOOR.value == pytest.approx(0.7)
    decision = promote(wh, layout, tmp_path, 1, "weak", 0, floor=REAL_FLOOR)  # 0.6: the majority answer
    assert not decision.promoted and "below the accuracy floor" in decision.reason and "0.7000" in decision.reason
    row = registry.model_row(wh, decision.model_version)
    assert row["is_production"] == False and decision.path.is_file()  # noqa: E712
    assert registry.production_model(wh) is None
    with pytest.raises(LookupError, match="none cleared the accuracy floor.*or name model_version"):
        registry.model_row(wh)


def register_production(wh, layout, class_id: int, version: str = "old"):
    old = constant_model(layout.models_dir / version / "model.pt", class_id)
    registry.register(wh, model_version=version, preset="test", resolution=32, path=old, trained_on="synthetic",
                      scores=scores_of(class_id), promote=True)
    return old


def test_a_damaged_production_artifact_does_not_block_the_next_promotion(world, tmp_path):
    wh, layout = world
    old = register_production(wh, layout, 1)
    data = bytearray(old.read_bytes())
    data[len(data) // 2] ^= 0xFF
    old.write_bytes(bytes(data))
    decision = promote(wh, layout, tmp_path, 2, "new", 0)  # worse than "old" was, but "old" is unusable
    assert decision.promoted and "unusable" in decision.reason and "sha256" in decision.production_problem
    assert production_version(wh) == decision.model_version


def test_a_rescore_that_raises_loses_nothing_and_a_rerun_completes(world, tmp_path, monkeypatch):
    wh, layout = world
    register_production(wh, layout, 2)
    staged = constant_model(tmp_path / "staging" / "kept" / "model.pt", 1)

    def locked(*args, **kwargs):
        raise RuntimeError("warehouse locked")

    monkeypatch.setattr(promotion, "rescore", locked)
    with pytest.raises(RuntimeError, match="warehouse locked"):
        promotion.promote(wh, layout, staged, scores_of(1), floor=NO_FLOOR, preset="test", resolution=32,
                          trained_on="synthetic", device="cpu", workers=1)
    assert staged.is_file() and sorted(p.parent.name for p in layout.models_dir.glob("*/model.pt")) == ["old"]
    monkeypatch.undo()
    decision = promotion.promote(wh, layout, staged, scores_of(1), floor=NO_FLOOR, preset="test", resolution=32,
                                 trained_on="synthetic", device="cpu", workers=1)
    assert decision.promoted and not staged.exists()


CHILD = """
import sys
from pathlib import Path
import numpy as np
from crystal_pipeline.evaluation import promotion, registry
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.warehouse import Warehouse

layout = DataLayout.under(Path(sys.argv[1]))
val = np.array({val})
probs = np.zeros((len(val), 10), dtype=np.float32)
probs[:, 0] = 1.0
promotion.promote(Warehouse(layout.warehouse), layout, Path(sys.argv[2]), registry.score(val, probs),
                  floor=registry.AccuracyFloor(0.0, 0.6, "test"), preset="test", resolution=32,
                  trained_on="synthetic", device="cpu", workers=1)
"""


@pytest.mark.parametrize("point", ["promotion.during_rescore", "promotion.after_move", "promotion.before_row",
                                   "promotion.after_row"])
def test_promotion_killed_at_each_step_then_rerun_registers_the_model_exactly_once(world, tmp_path, point):
    """SIGKILL (no finally, no cleanup) at each step of promote; a plain re-run with the same
    staged file completes: one row for the new file, the file in place with the row's sha256,
    exactly one production model, no second version folder, the staged copy gone."""
    from crystal_pipeline.files import file_sha256
    from tests.crash_harness import killed_at

    wh, layout = world
    register_production(wh, layout, 2)  # 0.3: the new "clear" model (0.6) replaces it
    staged = constant_model(tmp_path / "staging" / "run" / "model.pt", 1)
    code = CHILD.format(val=VAL).replace("sys.argv[1]", repr(str(layout.data_dir))).replace(
        "sys.argv[2]", repr(str(staged)))
    killed_at(point, code)
    assert staged.is_file()  # whatever step it died at, the trained model is still somewhere
    decision = promotion.promote(wh, layout, staged, scores_of(1), floor=NO_FLOOR, preset="test", resolution=32,
                                 trained_on="synthetic", device="cpu", workers=1)
    rows = wh.query_df("SELECT model_version, path, sha256, is_production FROM models WHERE model_version <> 'old'")
    assert len(rows) == 1 and rows["model_version"].item() == decision.model_version
    assert file_sha256(rows["path"].item()) == rows["sha256"].item()
    assert int(wh.scalar("SELECT count(*) FROM models WHERE is_production")) == 1
    assert production_version(wh) == decision.model_version
    assert sorted(p.parent.name for p in layout.models_dir.glob("*/model.pt")) == sorted(["old", decision.model_version])
    assert not staged.exists()
