"""The code location: one Definitions object for the UI, the CLI and the tests.

`dagster asset materialize -m definitions`, `dagster dev` ([tool.dagster] in
pyproject.toml) and workspace.yaml all load this module.
"""

import dagster as dg

from assets import evaluate, ingest, prepare, train
from resources import build_resources

all_assets = dg.load_assets_from_modules([ingest, prepare, train, evaluate])
all_checks = dg.load_asset_checks_from_modules([ingest, prepare, train, evaluate])

ingest_and_prepare_job = dg.define_asset_job(
    "ingest_and_prepare",
    selection=dg.AssetSelection.groups("ingest", "prepare"),
    description="Scan the raw archive, agree labels, and write the training tensors.",
)

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[ingest_and_prepare_job],
    resources=build_resources(),
)
