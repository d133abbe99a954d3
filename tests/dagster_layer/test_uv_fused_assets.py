"""Issue 20 item 3 through the real assets: a UV archive -> ingest -> tensors with UV -> a fused
(two-channel) smoke model -> a UV plate labelled with it."""

import shutil

import dagster as dg
import pytest
import torch

from crystal_pipeline import tensors
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.model import load
from crystal_pipeline.synthetic import write_archive, write_plate
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """A UV archive (two 96-well plates at 64 px) ingested, prepared and smoke-trained."""
    import definitions

    data = tmp_path_factory.mktemp("uvassets") / "data"
    write_archive(data / "raw", plates=2, seed=11, wells=96, size=64, uv=True)
    # Three drops lose their UV picture, as a lab's imager sometimes skips one: the UV tensors
    # leave them out, and the blocking row check must allow for that instead of stopping training.
    missing = sorted((data / "raw" / "plates").glob("*/*.uv.png"))[:3]
    for path in missing:
        path.unlink()
    resources = build_resources(StorageResource(data_dir=str(data)))
    result = dg.materialize(
        [*definitions.all_assets, *definitions.all_checks], resources=resources, instance=dg.DagsterInstance.ephemeral(),
        selection=dg.AssetSelection.groups("ingest", "prepare", "train"),
        run_config={"ops": {"crystalnet_model": {"config": {"preset": "smoke", "accuracy_floor": 0.0}}}})
    assert result.success
    [tensors_event] = [e for e in result.get_asset_materialization_events()
                       if e.asset_key.to_user_string() == "image_tensors"]
    assert tensors_event.step_materialization_data.materialization.metadata["uv_column"].value is True
    [rows_check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "tensor_rows_match_labels"]
    labelled = set(Warehouse(DataLayout.under(data).warehouse).query_df(
        "SELECT image_id FROM consensus_labels")["image_id"])
    left_out = sum(f"{p.parent.name}/{p.name[:-len('.uv.png')]}" in labelled for p in missing)
    assert rows_check.passed and left_out >= 1
    assert rows_check.metadata["left_out_without_uv"].value == left_out
    return data


def _label(data, key):
    import definitions

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("plates", [key])
        return dg.materialize([*definitions.all_assets, *definitions.all_checks],
                              resources=build_resources(StorageResource(data_dir=str(data))),
                              instance=instance, selection=dg.AssetSelection.groups("plates"),
                              partition_key=key, raise_on_error=False)


def test_uv_archive_trains_a_fused_model_that_labels_a_uv_plate(fused):
    layout = DataLayout.under(fused)
    wh = Warehouse(layout.warehouse)
    [(model_path,)] = wh.query_df("SELECT path FROM models WHERE is_production").itertuples(index=False)
    model = load(model_path, device="cpu")
    assert model.in_channels == 2
    train = tensors.read_split(layout.tensors_split_dir(model.resolution, "train"), model.resolution)
    assert train.uv is not None and len(train) > 0
    # the second channel's normalization is the UV column's, not a copy of the visible one
    assert not torch.equal(model.pixel_mean[0, 0], model.pixel_mean[0, 1])

    write_plate(layout.incoming_dir / "UVPLATE", "UVPLATE", seed=5, wells=96, size=64, uv=True)
    assert _label(fused, "UVPLATE").success
    assert wh.scalar("SELECT count(*) FROM predictions WHERE plate_id = 'UVPLATE'") == 96
    assert wh.scalar("SELECT count(*) FROM images WHERE plate_id = 'UVPLATE' AND status = 'quarantined'") == 0


def test_a_visible_only_plate_is_not_labelled_by_the_fused_model(fused):
    layout = DataLayout.under(fused)
    write_plate(layout.incoming_dir / "VISPLATE", "VISPLATE", seed=6, wells=96, size=64)
    result = _label(fused, "VISPLATE")
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "fused (visible + UV)" in message and "model_version" in message
    assert Warehouse(layout.warehouse).scalar("SELECT count(*) FROM predictions WHERE plate_id = 'VISPLATE'") == 0


def test_with_a_visible_model_promoted_too_each_plate_gets_the_model_of_its_pictures(fused):
    """Runs after the test above (one file, in order): a visible model is promoted beside the fused
    one. A UV plate is labelled by the fused model with the visible one's second opinion, and its
    report colours the map by either; a plate without UV is labelled by the visible model."""
    import json

    from crystal_pipeline.evaluation import registry
    from crystal_pipeline.model import add_calibration, save_artifact
    from crystal_pipeline.model.network import CrystalNet

    layout = DataLayout.under(fused)
    wh = Warehouse(layout.warehouse)
    [fused_row] = wh.query_df("SELECT * FROM models WHERE is_production").to_dict("records")
    torch.manual_seed(3)
    path = save_artifact(layout.model_path("visible-1"), CrystalNet(resolution=int(fused_row["resolution"])))
    add_calibration(path, temperature=1.0, crystal_threshold=0.2)
    scores = registry.Scores(0.5, 0.9, 0.8, 0.2, 10)
    registry.register(wh, model_version="visible-1", preset="smoke", resolution=int(fused_row["resolution"]),
                      path=path, trained_on="synthetic", scores=scores, promote=True, in_channels=1)
    assert set(wh.query_df("SELECT model_version FROM models WHERE is_production")["model_version"]) == \
        {fused_row["model_version"], "visible-1"}

    write_plate(layout.incoming_dir / "UV2", "UV2", seed=7, wells=96, size=64, uv=True)
    write_plate(layout.incoming_dir / "VIS2", "VIS2", seed=8, wells=96, size=64)
    uv_run, vis_run = _label(fused, "UV2"), _label(fused, "VIS2")
    assert uv_run.success and vis_run.success
    by_model = wh.query_df("SELECT plate_id, model_version, count(*) AS n FROM predictions "
                           "WHERE plate_id IN ('UV2', 'VIS2') GROUP BY ALL ORDER BY ALL")
    assert by_model.values.tolist() == [["UV2", fused_row["model_version"], 96], ["UV2", "visible-1", 96],
                                        ["VIS2", "visible-1", 96]]
    uv_meta = json.loads((layout.plate_report_dir("UV2") / "hits.meta.json").read_text())
    assert uv_meta["model_version"] == fused_row["model_version"] and "has UV pictures" in uv_meta["model_reason"]
    assert uv_meta["second_opinion"]["model_version"] == "visible-1"
    uv_page = (layout.plate_report_dir("UV2") / "report.html").read_text()
    assert uv_page.count("<select class='colouring'>") == 2 and "plate map, visible only" in uv_page
    vis_meta = json.loads((layout.plate_report_dir("VIS2") / "hits.meta.json").read_text())
    assert vis_meta["model_version"] == "visible-1" and vis_meta["second_opinion"] is None
    assert vis_meta["model_reason"] == "The plate has no UV pictures, so the production visible model labelled it."
    assert "<select class='colouring'>" not in (layout.plate_report_dir("VIS2") / "report.html").read_text()
    # The UI's summary carries the visible model's map beside the fused one, and how many calls differ.
    [uv_report] = uv_run.asset_materializations_for_node("plate_report")
    shown = uv_report.metadata["plate_map_visible"].value
    differ = uv_report.metadata["calls_differ"].value
    assert differ == len(uv_meta["second_opinion"]["calls_differ"])
    assert f"{differ} wells where" in shown and "![plate map, visible only](data:image/png;base64," in shown
    assert shown.split("base64,")[1].split(")")[0] not in uv_report.metadata["plate_map"].value  # another picture
    [vis_report] = vis_run.asset_materializations_for_node("plate_report")
    assert "plate_map_visible" not in vis_report.metadata and "calls_differ" not in vis_report.metadata
