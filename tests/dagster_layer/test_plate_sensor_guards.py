"""The plate sensor's guards: hostile folder names, runs failed past their retries, settling.

Driven through :func:`assets.plate_sensor.evaluate_incoming` with the callbacks the
daemon's sensor gives it, against an ``instance_for_test`` holding the runs.
"""

from __future__ import annotations

import json
import os
import time

import dagster as dg
from PIL import Image

from assets.plate_sensor import evaluate_incoming, failed_plate_run


def wells(folder, n, plate_json=None):
    folder.mkdir(parents=True, exist_ok=True)
    if plate_json:
        (folder / "plate.json").write_text(json.dumps(plate_json))
    for i in range(n):
        Image.new("L", (8, 8), 100 + i % 50).save(folder / f"{chr(65 + i // 12)}{i % 12 + 1:02d}.png")
    return folder


def age(folder, minutes):
    """Every file's modification time ``minutes`` in the past (an imager that stopped writing)."""
    then = time.time() - minutes * 60
    for path in folder.iterdir():
        os.utime(path, (then, then))


def two_ticks(incoming, **callbacks):
    first = evaluate_incoming(incoming, None, lambda key: False, **callbacks)
    return first, evaluate_incoming(incoming, first.cursor, lambda key: False, **callbacks)


def test_hostile_folder_names_are_listed_with_the_reason_and_never_run(tmp_path):
    incoming = tmp_path / "incoming"
    for name in ("x@y", "bad\x01id", "p" * 200):
        wells(incoming / name, 96, {"format": 96})
    wells(incoming / "GOOD" / "x@y", 96, {"format": 96})  # a hostile inspection folder
    wells(incoming / "<!--<script>", 96, {"format": 96})  # a legal name: it runs, its pages escape it
    _, second = two_ticks(incoming)
    assert [r.partition_key for r in second.run_requests] == ["<!--<script>"]
    assert list(second.dynamic_partitions_requests[0].partition_keys) == ["<!--<script>"]
    third = evaluate_incoming(incoming, second.cursor, lambda key: True)
    message = third.skip_reason.skip_message
    assert "'x@y': refused: plate id 'x@y' holds '@'" in message
    assert "'GOOD/x@y': refused: inspection 'x@y' holds '@'" in message
    assert "control character" in message and "at most 96" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["incoming"]  # nothing written beside it


@dg.op
def step():
    pass


@dg.job
def plate_job():
    step()


def test_a_plate_whose_run_failed_past_its_retries_is_shown_failed_with_the_command(tmp_path):
    incoming = tmp_path / "incoming"
    wells(incoming / "P1", 96, {"format": 96})
    with dg.instance_for_test() as instance:
        failed = lambda key, signature: failed_plate_run(instance, key, signature)  # noqa: E731
        _, second = two_ticks(incoming, failed=failed)
        [request] = second.run_requests
        tags = dict(request.tags)
        third = evaluate_incoming(incoming, second.cursor, lambda key: True, failed=failed)
        assert "already labelled and unchanged" in third.skip_reason.skip_message  # no run records yet

        # The run fails, and Dagster's run retries will try again: not yet a failure to show.
        run = instance.create_run_for_job(plate_job, tags={**tags, "dagster/will_retry": "true"})
        instance.report_run_failed(run)
        assert failed_plate_run(instance, "P1", tags["plate_signature"]) is None
        # Its retry (a child run with the same tags) fails too, and no retries are left.
        retry = instance.create_run_for_job(plate_job, tags={**tags, "dagster/parent_run_id": run.run_id,
                                                             "dagster/retry_number": "2",
                                                             "dagster/will_retry": "false"})
        instance.report_run_failed(retry)
        fourth = evaluate_incoming(incoming, second.cursor, lambda key: True, failed=failed)
        message = fourth.skip_reason.skip_message
        assert "already labelled" not in message
        assert f"P1: run {retry.run_id[:8]} FAILED after 3 attempt(s)" in message
        assert "dagster asset materialize -m definitions --select plate_images," in message
        assert "--partition 'P1'" in message
        # A run for other files of the plate says nothing about these.
        assert failed_plate_run(instance, "P1", "another-signature") is None


def test_a_plate_without_metadata_is_labelled_as_it_is_once_settled(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTAL_PLATE_SETTLE_MINUTES", "5")
    incoming = tmp_path / "incoming"
    age(wells(incoming / "OLD", 90), 6)  # a 96-well imager that writes neither plate.json nor a marker
    wells(incoming / "FRESH", 90)  # still being written, as far as anyone can tell
    age(wells(incoming / "DECLARED", 90, {"format": 96}), 60)  # plate.json says 96: it waits for them
    _, second = two_ticks(incoming)
    assert [r.partition_key for r in second.run_requests] == ["OLD"]
    skipped = dict(part.split(": ", 1) for part in
                   evaluate_incoming(incoming, second.cursor, lambda key: True).skip_reason.skip_message
                   .removeprefix("no plate ready. ").split("; ") if not part.endswith("unchanged"))
    assert skipped["FRESH"].endswith("labelled as it is once unchanged for 5 min")
    assert skipped["DECLARED"] == "incomplete: 90 of 96 wells and no completion marker (COMPLETE or .complete)"


def test_plate_runs_are_retried_after_a_step_failure_and_other_runs_are_not(tmp_path):
    """Dagster's run-retry decision (the daemon's ``should_retry``) on the project's own dagster.yaml."""
    import yaml
    from dagster._core.storage.tags import RUN_FAILURE_REASON_TAG
    from dagster._daemon.auto_run_reexecution.auto_run_reexecution import should_retry

    from assets.plate_sensor import label_plate_job
    from tests.conftest import REPO

    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides={"run_retries": settings["run_retries"]}) as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        step_failure = {RUN_FAILURE_REASON_TAG: "STEP_FAILURE"}
        plate_run = instance.create_run_for_job(plate_job, tags={**label_plate_job.tags, **step_failure,
                                                                 "plate": "P1"})
        other_run = instance.create_run_for_job(plate_job, tags=step_failure)
        for run in (plate_run, other_run):
            instance.report_run_failed(run)
        assert should_retry(instance.get_run_by_id(plate_run.run_id), instance)
        assert not should_retry(instance.get_run_by_id(other_run.run_id), instance)


def test_a_hostile_partition_key_fails_the_plate_run_with_the_reason_and_writes_nothing(tmp_path):
    """A partition added by hand (the UI, the API) never reaches the files: `..` would be the
    data dir itself, `a@b@c` two separators."""
    from assets.plates import plate_images, plates_partitions
    from resources import StorageResource, build_resources

    data = tmp_path / "data"
    wells(data / "incoming" / "P1", 4, {"format": 96})
    before = sorted(tmp_path.rglob("*"))
    with dg.instance_for_test() as instance:
        for key, reason in (("..", "plate id '..' is a path step"), ("a@b@c", "inspection 'b@c' holds '@'")):
            instance.add_dynamic_partitions(plates_partitions.name, [key])
            result = dg.materialize([plate_images], partition_key=key, instance=instance, raise_on_error=False,
                                    resources=build_resources(StorageResource(data_dir=str(data))))
            assert not result.success
            [failure] = [e for e in result.all_events if e.is_step_failure]
            assert reason in failure.step_failure_data.error.to_string()
    assert sorted(tmp_path.rglob("*")) == before
