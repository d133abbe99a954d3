"""``plate_timeline``: a plate's wells across its inspections (time course), one partition per imaging.

Library code does the work (:mod:`crystal_pipeline.plates.timeline`); this asset reads the
plate's stored predictions, writes ``reports/plates/<key>/timeline.csv`` and checks it.
"""

import dagster as dg
import pandas as pd

from assets.metadata import md, table_md
from assets.plates import _plate, plates_partitions
from crystal_pipeline.files import atomic_write_bytes
from crystal_pipeline.plates.plate_run import PlateRun
from crystal_pipeline.plates.timeline import load_timeline, timeline_problems
from crystal_pipeline.warehouse import predictions as prediction_table
from resources import StorageResource, WarehouseResource


@dg.asset(group_name="plates", kinds={"duckdb", "csv"}, partitions_def=plates_partitions,
          check_specs=[dg.AssetCheckSpec(
              "timeline_matches_predictions", asset="plate_timeline",
              description="timeline.csv as written holds every labelled image of this inspection once, and each "
                          "well's first hit is its earliest hit")])
def plate_timeline(context: dg.AssetExecutionContext, storage: StorageResource, warehouse: WarehouseResource,
                   plate_predictions: PlateRun):
    """Every well's (and drop's) class and crystal_prob at each inspection of the plate, and the first
    inspection at which it became a hit, at the hit threshold of the model plate_predictions used
    (its rows first; an earlier inspection labelled by another model keeps that label)."""
    key, plate_id, inspection = _plate(context)
    wh = warehouse.get()
    run = plate_predictions
    threshold = run.crystal_threshold
    timeline = load_timeline(wh, plate_id, run.model_version, threshold)
    path = atomic_write_bytes(storage.layout.plate_timeline_csv(key), timeline.csv_bytes())
    stored = prediction_table.plate_predictions(wh, plate_id, inspection, run.model_version, columns=("image_id",))
    problems = timeline_problems(path, inspection, stored["image_id"])
    new = timeline.new_hits(inspection)
    table = pd.DataFrame([(h.well, h.drop, round(h.at(inspection).crystal_prob, 3), h.first_hit) for h in new],
                         columns=["well", "drop", "crystal_prob", "first_hit"])
    yield dg.MaterializeResult(metadata={
        "timeline": dg.MetadataValue.path(str(path)),
        "inspections": ", ".join(i or "(none)" for i in timeline.inspections),
        "previous_inspection": timeline.previous(inspection) or "",
        "well_drops": len(timeline.wells),
        "ever_hit": sum(h.ever_hit for h in timeline.wells),
        "new_hits": len(new),
        "model_version": run.model_version,
        "crystal_threshold": round(threshold, 4),
        "new_hit_list": md(table_md(table, 50)),
    })
    yield dg.AssetCheckResult(check_name="timeline_matches_predictions", passed=not problems,
                              metadata={"problems": "\n".join(problems) or "none"})
