"""crystalnet_model with init_from: a fine-tune of production, in process and through Pipes +
torchrun, registered with its parent and the labels it learnt from."""

import dagster as dg
import pandas as pd
import torch

from crystal_pipeline.layout import DataLayout
from crystal_pipeline.model import load
from crystal_pipeline.warehouse import Warehouse
from resources import ComputeResource, StorageResource, build_resources


def _meta(result):
    [event] = result.asset_materializations_for_node("crystalnet_model")
    return {k: v.value for k, v in event.metadata.items()}


def test_finetune_from_production_through_both_launchers(data_dir):
    import definitions

    storage = StorageResource(data_dir=str(data_dir))
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([*definitions.all_assets], resources=build_resources(storage), instance=instance,
                          selection=dg.AssetSelection.groups("ingest", "prepare")).success

    def materialize(launcher, **config):
        resources = {**build_resources(storage), "compute": ComputeResource(device="cpu", launcher=launcher)}
        # accuracy_floor 0: fine-tuning needs a production parent; the smoke model is below the real floor.
        run_config = {"ops": {"crystalnet_model": {"config": {"preset": "smoke", "accuracy_floor": 0.0, **config}}}}
        result = dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=resources,
                                instance=instance, selection=dg.AssetSelection.assets("crystalnet_model"),
                                run_config=run_config)
        assert result.success
        return _meta(result)

    scratch = materialize("in_process")
    frozen = {"overrides": {"freeze_features": "true"}}
    in_process = materialize("in_process", init_from="production", **frozen)
    piped = materialize("pipes", init_from=scratch["model_version"], **frozen)

    wh = Warehouse(DataLayout.under(data_dir).warehouse)
    rows = wh.query_df("SELECT * FROM models ORDER BY created_at").set_index("model_version")
    assert pd.isna(rows.loc[scratch["model_version"], "parent_version"])  # from scratch: NULL
    for meta in (in_process, piped):
        row = rows.loc[meta["model_version"]]
        assert row["parent_version"] == scratch["model_version"] == meta["parent_version"]
        assert int(row["n_train_labels"]) == int(rows.loc[scratch["model_version"], "n_train_labels"]) > 0
    assert piped["launcher"] == "pipes (torchrun)" and "--init-artifact" in piped["command"]
    # 'production' and the version it names are one parent: the same computation either way.
    assert in_process["val_accuracy"] == piped["val_accuracy"]
    parent = load(rows.loc[scratch["model_version"], "path"], "cpu")
    child = load(rows.loc[piped["model_version"], "path"], "cpu")
    assert torch.equal(child.conv1.weight, parent.conv1.weight)  # frozen features
    assert not torch.equal(child.out.weight, parent.out.weight)
