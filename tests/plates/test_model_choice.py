"""Which model labels a plate (issue 20 items 3 and 7): one production model per kind of input,
the fused one for plates with UV pictures, the visible one for the others, and models.in_channels
added to an old warehouse and filled from the model files."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from crystal_pipeline.evaluation import registry
from crystal_pipeline.files import file_sha256
from crystal_pipeline.model import save_artifact
from crystal_pipeline.model.network import CrystalNet
from crystal_pipeline.plates.model_choice import choose_models, input_channels
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import models as model_table


def _artifact(tmp_path, name: str, in_channels: int):
    return save_artifact(tmp_path / f"{name}.pt", CrystalNet(resolution=32, in_channels=in_channels))


def _warehouse(path) -> Warehouse:
    wh = Warehouse(path)
    wh.ensure_schema()
    return wh


def _register(wh, tmp_path, name: str, in_channels: int, *, promote: bool = True, day: int = 1):
    path = _artifact(tmp_path, name, in_channels)
    model_table.insert_model(wh, model_version=name, created_at=datetime(2026, 1, day), preset="smoke",
                             resolution=32, path=str(path), sha256=file_sha256(path), trained_on="synthetic",
                             val_accuracy=0.5, crystal_recall=0.9, crystal_auc=0.8, crystal_threshold=0.3,
                             make_production=promote, in_channels=in_channels)


def test_each_plate_gets_the_production_model_of_its_pictures(tmp_path):
    wh = _warehouse(tmp_path / "w.duckdb")
    _register(wh, tmp_path, "vis-old", 1, day=1)
    _register(wh, tmp_path, "vis", 1, day=2)
    _register(wh, tmp_path, "fused", 2, day=3)  # promoting the fused model leaves the visible one production
    production = wh.query_df("SELECT model_version FROM models WHERE is_production ORDER BY model_version")
    assert list(production["model_version"]) == ["fused", "vis"]

    uv = choose_models(wh, has_uv=True)
    assert (uv.record["model_version"], uv.second["model_version"]) == ("fused", "vis")
    assert "UV pictures" in uv.reason and "fused" in uv.reason
    plain = choose_models(wh, has_uv=False)
    assert plain.record["model_version"] == "vis" and plain.second is None
    assert plain.reason == "The plate has no UV pictures, so the production visible model labelled it."
    named = choose_models(wh, has_uv=False, model_version="vis-old")
    assert named.record["model_version"] == "vis-old" and "model_version" in named.reason

    _register(wh, tmp_path, "fused-2", 2, day=4)  # a newer fused model replaces only the fused one
    assert choose_models(wh, has_uv=True).record["model_version"] == "fused-2"
    assert choose_models(wh, has_uv=False).record["model_version"] == "vis"


def test_a_uv_plate_without_a_fused_model_gets_the_visible_one_and_no_second_opinion(tmp_path):
    wh = _warehouse(tmp_path / "w.duckdb")
    _register(wh, tmp_path, "vis", 1)
    _register(wh, tmp_path, "fused-below-floor", 2, promote=False)
    choice = choose_models(wh, has_uv=True)
    assert choice.record["model_version"] == "vis" and choice.second is None
    assert "no fused" in choice.reason


def test_no_model_fits_a_plate_without_uv_when_only_a_fused_model_is_production(tmp_path):
    wh = _warehouse(tmp_path / "w.duckdb")
    _register(wh, tmp_path, "vis-unpromoted", 1, promote=False)
    _register(wh, tmp_path, "fused", 2)
    assert choose_models(wh, has_uv=True).second is None  # the only visible model is not production
    with pytest.raises(LookupError, match=r"fused \(visible \+ UV\) and this plate has no UV pictures"):
        choose_models(wh, has_uv=False)
    with pytest.raises(LookupError, match="no production model"):
        choose_models(_warehouse(tmp_path / "empty.duckdb"), has_uv=True)


def test_an_old_models_table_gains_in_channels_read_from_the_model_files(tmp_path):
    path = tmp_path / "old.duckdb"
    vis, fused = _artifact(tmp_path, "vis", 1), _artifact(tmp_path, "fused", 2)
    con = duckdb.connect(str(path))  # the models table of a warehouse from before in_channels
    con.execute("CREATE TABLE models (model_version VARCHAR PRIMARY KEY, created_at TIMESTAMP NOT NULL, "
                "preset VARCHAR, resolution INTEGER, path VARCHAR NOT NULL, sha256 VARCHAR, trained_on VARCHAR, "
                "val_accuracy DOUBLE, crystal_recall DOUBLE, crystal_auc DOUBLE, crystal_threshold DOUBLE, "
                "is_production BOOLEAN NOT NULL DEFAULT FALSE, temperature DOUBLE)")
    for version, file, production, day in (("vis", vis, False, 1), ("fused", fused, True, 2),
                                           ("gone", tmp_path / "gone.pt", False, 3)):
        con.execute("INSERT INTO models (model_version, created_at, path, sha256, is_production) "
                    "VALUES (?, ?, ?, ?, ?)", [version, datetime(2026, 1, day), str(file),
                                               file_sha256(file) if file.exists() else "x", production])
    con.close()
    wh = Warehouse(path)
    # read-only, before any write has added the column (the doctor's view): every model is visible
    assert registry.production_model(wh, 1)["model_version"] == "fused"
    assert registry.production_model(wh, 2) is None and model_table.rows_without_channels(wh) == []
    wh.ensure_schema()
    assert wh.query_df("SELECT count(*) AS n FROM models WHERE in_channels IS NULL")["n"][0] == 3
    assert sorted(registry.record_input_channels(wh)) == ["fused", "vis"]  # the missing file stays unknown
    rows = {r["model_version"]: r for r in wh.query_df("SELECT * FROM models").to_dict("records")}
    assert [input_channels(rows[v]) for v in ("vis", "fused", "gone")] == [1, 2, 1]
    assert model_table.rows_without_channels(wh)[0]["model_version"] == "gone"
    # the old production model was fused: a plate with UV gets it, one without has no model that fits
    assert choose_models(wh, has_uv=True).record["model_version"] == "fused"
    with pytest.raises(LookupError, match="no visible model is production"):
        choose_models(wh, has_uv=False)


def test_a_finetune_of_production_starts_from_the_production_model_of_the_kind_it_trains(tmp_path):
    """``init_from: production`` (the annotations sensor's request) names the production model of
    the kind the labels train: the newest production model of either kind would hand a fused run a
    visible parent (a network of another shape) whenever the visible one was promoted last."""
    from crystal_pipeline.tensors.preparation import channels_trained

    wh = _warehouse(tmp_path / "w.duckdb")
    _register(wh, tmp_path, "fused", 2, day=1)
    _register(wh, tmp_path, "vis", 1, day=2)  # promoted last: the newest production row
    with wh.transaction() as con:
        for image_id, imaging in (("P1_A01", "visible"), ("P1_A01.uv", "uv")):
            con.execute("INSERT INTO images (image_id, plate_id, path, status, source, ingested_at, imaging) "
                        "VALUES (?, 'P1', ?, 'ok', 'raw', now(), ?)", [image_id, f"{image_id}.png", imaging])
        con.execute("INSERT INTO consensus_labels VALUES ('P1_A01', 1, 'clear', false, 3, 1.0, 'train')")
    assert channels_trained(wh) == 2 and channels_trained(wh, "visible") == 1
    assert registry.parent_model(wh, "production", channels_trained(wh))["model_version"] == "fused"
    assert registry.parent_model(wh, "production", 1)["model_version"] == "vis"
    assert registry.parent_model(wh, "production")["model_version"] == "vis"  # no kind: the newest, as before

    with wh.transaction() as con:  # the UV picture quarantined: the labels train a visible model
        con.execute("UPDATE images SET status = 'quarantined' WHERE imaging = 'uv'")
    assert channels_trained(wh) == 1
    with wh.transaction() as con:
        con.execute("DELETE FROM models WHERE model_version = 'fused'")
    with pytest.raises(LookupError, match=r"no production fused model \(vis is production for the other kind"):
        registry.parent_model(wh, "production", 2)
