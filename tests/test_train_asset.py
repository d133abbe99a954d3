"""crystalnet_model materializes with the smoke preset, registers and promotes."""

import dagster as dg

from crystal_pipeline.layout import DataLayout
from crystal_pipeline.model import load
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources


def test_crystalnet_model_smoke_trains_registers_and_promotes(data_dir):
    import definitions

    resources = build_resources(StorageResource(data_dir=str(data_dir)))
    instance = dg.DagsterInstance.ephemeral()
    upstream = dg.materialize([*definitions.all_assets], resources=resources, instance=instance,
                              selection=dg.AssetSelection.groups("ingest", "prepare"))
    assert upstream.success
    run_config = {"ops": {"crystalnet_model": {"config": {"preset": "smoke", "accuracy_floor": 0.0}}}}
    results = []
    for _ in range(2):
        result = dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=resources,
                                instance=instance, selection=dg.AssetSelection.assets("crystalnet_model"),
                                run_config=run_config)
        assert result.success
        results.append(result)

    wh = Warehouse(DataLayout.under(data_dir).warehouse)
    models = wh.query_df("SELECT * FROM models ORDER BY created_at")
    assert len(models) == 2 and models["is_production"].sum() == 1
    assert set(models["resolution"]) == {32} and set(models["trained_on"]) == {"synthetic"}
    [event] = results[1].asset_materializations_for_node("crystalnet_model")
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["preset"] == "smoke" and meta["updates"] == 12
    assert "promot" in meta["promotion"] or "kept" in meta["promotion"]
    model = load(models["path"].iloc[-1], "cpu")
    assert model.resolution == 32
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in results[1].all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["val_accuracy_above_floor"]  # floor 0 in this test
    assert "val_accuracy_above_majority_rate" in checks


def test_current_val_split_rewrites_tensors_from_an_older_consensus(data_dir):
    import definitions
    from crystal_pipeline.tensors import preparation

    resources = build_resources(StorageResource(data_dir=str(data_dir)))
    assert dg.materialize([*definitions.all_assets], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                          selection=dg.AssetSelection.groups("ingest", "prepare")).success
    layout, wh = DataLayout.under(data_dir), Warehouse(DataLayout.under(data_dir).warehouse)
    first = preparation.current_val_split(wh, layout, 32)
    expected = sorted(wh.query_df("SELECT image_id FROM consensus_labels WHERE split = 'val'")["image_id"])
    assert list(first.image_ids) == expected
    # The labels change (one val image loses its label); the r32 tensors on disk are now stale.
    with wh.transaction() as con:
        con.execute("DELETE FROM consensus_labels WHERE image_id = ?", [expected[0]])
    again = preparation.current_val_split(wh, layout, 32)
    assert list(again.image_ids) == expected[1:]
