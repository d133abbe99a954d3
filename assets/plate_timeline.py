"""``plate_timeline``: a plate's wells across its inspections (time course), one partition per imaging.

Library code does the work (:mod:`crystal_pipeline.plates.timeline`); this asset reads the
plate's stored predictions, writes ``reports/plates/<key>/timeline.csv`` and checks it.
"""

import dagster as dg
import pandas as pd

from assets.metadata import md, table_md
from assets.plates import PlatePredictionConfig, _plate, _threshold, plate_predictions, plates_partitions
from assets.train import registered_model
from crystal_pipeline.files import atomic_write_bytes
from crystal_pipeline.plates.timeline import load_timeline, timeline_problems
from crystal_pipeline.warehouse import predictions as prediction_table
from resources import StorageResource, WarehouseResource


@dg.asset(group_name="plates", kinds={"duckdb", "csv"}, partitions_def=plates_partitions, deps=[plate_predictions],
          check_specs=[dg.AssetCheckSpec(
              "timeline_matches_predictions", asset="plate_timeline",
              description="timeline.csv as written holds every labelled image of this inspection once, and each "
                          "well's first hit is its earliest hit")])
def plate_timeline(context: dg.AssetExecutionContext, config: PlatePredictionConfig, storage: StorageResource,
                   warehouse: WarehouseResource):
    """Every well's (and drop's) class and crystal_prob at each inspection of the plate, and the first
    inspection at which it became a hit (at the model's hit threshold)."""
    key, plate_id, inspection = _plate(context)
    wh = warehouse.get()
    model_row = registered_model(wh, config.model_version)
    threshold = _threshold(model_row)
    timeline = load_timeline(wh, plate_id, model_row["model_version"], threshold)
    path = atomic_write_bytes(storage.layout.plate_timeline_csv(key), timeline.csv_bytes())
    stored = prediction_table.plate_predictions(wh, plate_id, inspection, model_row["model_version"],
                                                columns=("image_id",))
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
        "crystal_threshold": round(threshold, 4),
        "new_hit_list": md(table_md(table, 50)),
    })
    yield dg.AssetCheckResult(check_name="timeline_matches_predictions", passed=not problems,
                              metadata={"problems": "\n".join(problems) or "none"})
