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
