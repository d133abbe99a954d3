"""The evaluate group materializes on a smoke-trained model and its reports hold every table."""

import dagster as dg

from crystal_pipeline.layout import DataLayout
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources

SMOKE = {"preset": "smoke", "overrides": {}}


def test_evaluation_baselines_and_studies(data_dir):
    import definitions

    resources = build_resources(StorageResource(data_dir=str(data_dir)))
    instance = dg.DagsterInstance.ephemeral()
    # accuracy_floor 0: evaluation needs a production model, and the smoke model sits below the real
    # floor (tests/dagster_layer/test_train_asset.py tests the floor itself).
    run_config = {"ops": {
        "crystalnet_model": {"config": {"preset": "smoke", "accuracy_floor": 0.0}},
        "training_size_study": {"config": {**SMOKE, "fractions": [0.5, 1.0]}},
        "resolution_study": {"config": {**SMOKE, "resolutions": [32, 48]}},
    }}
    result = dg.materialize([*definitions.all_assets, *definitions.all_checks], resources=resources,
                            instance=instance, run_config=run_config,
                            selection=dg.AssetSelection.groups("ingest", "prepare", "train", "evaluate"))
    assert result.success

    def meta(asset):
        [event] = result.asset_materializations_for_node(asset)
        return {k: v.value for k, v in event.metadata.items()}

    version = Warehouse(DataLayout.under(data_dir).warehouse).scalar(
        "SELECT model_version FROM models WHERE is_production")
    report_dir = DataLayout.under(data_dir).evaluation_report_dir(version)
    markdown = (report_dir / "report.md").read_text()
    for needle in ("Precision", "Recall", "AUC", "Phase & Crystal", "has-crystal", "HWI"):
        assert needle in markdown, needle
    assert (report_dir / "report.html").stat().st_size > 1000
    assert any(p.suffix == ".png" for p in report_dir.iterdir())
    evaluation = meta("crystalnet_evaluation")
    assert 0.0 <= evaluation["accuracy"] <= 1.0 and "data:image/png;base64" in evaluation["evaluation"]
    # Reports score the held-out test split, and say so; val only tunes and promotes.
    n_test = Warehouse(DataLayout.under(data_dir).warehouse).scalar(
        "SELECT count(*) FROM consensus_labels WHERE split = 'test'")
    assert evaluation["split"] == "test" and evaluation["test_images"] == n_test > 0
    assert f"test split, {n_test} images" in markdown

    comparison = meta("model_comparison")
    assert {"accuracy[CrystalNet]", "accuracy[RF]", "accuracy[Neural Net]", "accuracy[Nearest Neighbor]"} <= set(comparison)
    table5 = (report_dir / "model_comparison.md").read_text()
    assert "Nearest Neighbor" in table5 and f"test split, {n_test} images" in table5
    assert comparison["split"] == "test" and comparison["test_images"] == n_test

    # metrics.json beside the report: the evaluation's numbers (calibrated with the model's T) and the baselines.
    import json

    stored = json.loads((report_dir / "metrics.json").read_text())
    assert stored["model_version"] == version and stored["split"] == evaluation["split"]
    assert stored["accuracy"] == evaluation["accuracy"] or abs(stored["accuracy"] - evaluation["accuracy"]) < 1e-4
    assert stored["temperature"] == Warehouse(DataLayout.under(data_dir).warehouse).scalar(
        "SELECT temperature FROM models WHERE is_production")
    assert set(stored["baselines"]) == {"RF", "Neural Net", "Nearest Neighbor"}
    for entry in stored["baselines"].values():
        assert 0.0 <= entry["mcnemar_p_vs_crystalnet"] <= 1.0 and len(entry["accuracy_ci95"]) == 2
    assert comparison["accuracy[CrystalNet]"] == round(stored["accuracy"], 4)  # Table 5 scores the calibrated model

    size_study = meta("training_size_study")
    assert size_study["points"] == 2 and size_study["split"] == "test" and f"Test split, {n_test} images" in size_study["study"]
    resolution = meta("resolution_study")
    assert "test_accuracy[32px]" in resolution and "test_accuracy[48px]" in resolution and resolution["split"] == "test"
    assert "128×128" in resolution["table3"]  # the paper's rows beside ours
