"""The annotations sensor tick by tick: content signature, instance memory, the training threshold."""

import json
import os
import time
from datetime import datetime, timedelta, timezone

import dagster as dg

from assets.annotations_sensor import annotations_sensor
from assets.ingest import ANNOTATIONS_SIGNATURE
from crystal_pipeline.layout import DataLayout
from crystal_pipeline.warehouse import Warehouse
from crystal_pipeline.warehouse import models as model_table
from resources import StorageResource, WarehouseResource


def tick(instance, data_dir, cursor=None):
    storage = StorageResource(data_dir=str(data_dir))
    resources = {"storage": storage, "warehouse": WarehouseResource(storage=storage)}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return annotations_sensor(context)


def review_csv(folder, name, wells, reviewer="ana"):
    path = folder / name
    path.write_text("plate_id,well,inspection,annotator,attributes\n"
                    + "".join(f"P1,{w},,review:{reviewer},crystal\n" for w in wells))
    return path


def jobs(result):
    return [(r.job_name, r.tags["reviewed_wells_since_production"]) for r in result.run_requests or []]


def test_sensor_ticks_on_changes_and_trains_after_enough_reviews(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTAL_FINETUNE_MIN_REVIEWS", "3")
    folder = tmp_path / "raw" / "annotations"
    folder.mkdir(parents=True)
    experts = folder / "experts.csv"
    experts.write_text("plate_id,well,annotator,attributes\nP1,A01,ann1,clear\n")
    instance = dg.DagsterInstance.ephemeral()

    first = tick(instance, tmp_path)  # a new folder: labels refresh; no model yet, no reviews
    assert jobs(first) == [("refresh_labels", "0")]
    cursor = first.cursor
    assert tick(instance, tmp_path, cursor).run_requests in (None, [])  # unchanged: nothing
    os.utime(experts, (time.time() + 5, time.time() + 5))  # touched, same bytes: still nothing
    assert not tick(instance, tmp_path, cursor).run_requests

    review_csv(folder, "review_1.csv", ["A01", "A02"])  # 2 reviewed wells < 3: labels only
    result = tick(instance, tmp_path, cursor)
    assert jobs(result) == [("refresh_labels", "2")]
    assert result.run_requests[0].run_config == {}  # a label refresh needs no run config
    cursor = result.cursor

    # A production model registered now: the reviews so far came before it.
    wh = Warehouse(DataLayout.under(tmp_path).warehouse)
    model_table.insert_model(wh, model_version="m1", created_at=datetime.now(timezone.utc).replace(tzinfo=None)
                             + timedelta(seconds=1), preset="smoke", resolution=32, path="x", sha256="y",
                             trained_on="synthetic", val_accuracy=0.5, crystal_recall=0.9, crystal_auc=0.8,
                             crystal_threshold=0.4, make_production=True)
    time.sleep(1.2)
    review_csv(folder, "review_2.csv", ["B01", "B02"], reviewer="bo")
    result = tick(instance, tmp_path, cursor)
    assert jobs(result) == [("refresh_labels", "2")]  # only the 2 that arrived after the model
    cursor = result.cursor
    review_csv(folder, "review_3.csv", ["B02", "C01"])  # B02 again counts once: 3 wells
    result = tick(instance, tmp_path, cursor)
    assert jobs(result) == [("refresh_labels_and_train", "3")]
    assert result.run_requests[0].run_key.endswith(":train")
    # With a production model the training request is a fine-tune of it (issue 10 item 4).
    assert result.run_requests[0].run_config == {
        "ops": {"crystalnet_model": {"config": {"preset": "finetune", "init_from": "production"}}}}
    cursor = result.cursor
    assert "train_requested_at" in json.loads(cursor)
    # The next review counts from the training request, not again from the old production model.
    time.sleep(0.05)
    review_csv(folder, "review_4.csv", ["D01"])
    result = tick(instance, tmp_path, cursor)
    assert jobs(result) == [("refresh_labels", "1")]
    signature = result.run_requests[0].tags["annotations_signature"]

    # A fresh cursor (a restarted daemon) reads the instance: the folder as last ingested is not run again.
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "annotations", metadata={ANNOTATIONS_SIGNATURE: signature}))
    fresh = tick(instance, tmp_path, None)
    assert not fresh.run_requests and "unchanged" in fresh.skip_reason.skip_message
    (folder / "review_4.csv").write_text("plate_id,well,inspection,annotator,attributes\nP1,D01,,review:ana,skin\n")
    # Without the cursor's training request, 5 wells arrived since the production model: train.
    assert [r.job_name for r in tick(instance, tmp_path, None).run_requests] == ["refresh_labels_and_train"]
    # Once the instance records a crystalnet_model materialization, reviews count from it.
    instance.report_runless_asset_event(dg.AssetMaterialization("crystalnet_model"))
    time.sleep(0.05)
    review_csv(folder, "review_5.csv", ["E01"])
    assert jobs(tick(instance, tmp_path, None)) == [("refresh_labels", "1")]
