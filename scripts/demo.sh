#!/usr/bin/env bash
# The whole pipeline on the built-in synthetic archive, through the real dagster CLI.
# Runs are recorded in $DAGSTER_HOME, so `make ui` shows them afterwards.
set -euo pipefail
: "${CRYSTAL_DATA_DIR:?}" "${DAGSTER_HOME:?}"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
RAW_DIR="${CRYSTAL_RAW_DIR:-$CRYSTAL_DATA_DIR/raw}"

if [ ! -d "$RAW_DIR/plates" ]; then
  echo "== generating the synthetic demo archive in $RAW_DIR (4 plates x 1536 wells)"
  crystal-pipeline demo-archive --out "$RAW_DIR" --plates "${DEMO_PLATES:-4}" --seed 0
else
  echo "== using the archive already in $RAW_DIR"
fi

# Everything but the two studies (minutes each per point on a CPU; materialize them from
# the UI or with --select training_size_study) and the per-plate assets (partitioned).
SELECTION="group:ingest or group:prepare or group:train or key:crystalnet_evaluation or key:baseline_models or key:model_comparison"
echo "== materializing the pipeline: dagster asset materialize -m definitions --select '$SELECTION'"
# In one process: on a 2-core box the baselines and CrystalNet's training, run side by side,
# only share the cores (and oversubscribe them), and a process per step costs seconds each
# (docs/benchmarks.md). DEMO_EXECUTOR=multiprocess gives the parallel executor back.
EXECUTION="{\"execution\": {\"config\": {\"${DEMO_EXECUTOR:-in_process}\": {}}}}"
dagster asset materialize -m definitions --select "$SELECTION" --config-json "$EXECUTION"

echo
echo "Done. Results under $CRYSTAL_DATA_DIR:"
echo "  warehouse  $CRYSTAL_DATA_DIR/warehouse.duckdb   (tables images, annotations, annotation_errors, consensus_labels)"
echo "  tensors    $CRYSTAL_DATA_DIR/tensors/r128/{train,val,test}/*.parquet and stats.npz"
echo "  models     $CRYSTAL_DATA_DIR/models/<version>/model.pt   (table models; the production one is flagged)"
echo "  reports    $CRYSTAL_DATA_DIR/reports/evaluation/<version>/report.html and model_comparison.md"
echo "Open the UI with: make ui   (then http://127.0.0.1:3000, runs of this demo are already there)"

echo
echo "== a new plate arrives: the sensor finds it, registers the partition and labels it"
python scripts/label_new_plate.py --plate-id "${DEMO_PLATE_ID:-SYN0101}"
echo "Open the plate report above in a browser, or the 'plate_report' asset in the UI (make ui)."
