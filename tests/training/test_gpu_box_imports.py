"""The training and labelling paths run on a GPU box that has torch, numpy, pyarrow and Pillow
but no Dagster, DuckDB, pandas or ONNX: prove it in an interpreter where those imports fail."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from crystal_pipeline import tensors

# onnx and onnxruntime too: the GPU box has neither, and only `export` and `label --engine onnx` need them.
BLOCKED = ("dagster", "duckdb", "pandas", "onnx", "onnxruntime", "onnxscript")

# Run first in the child: the packages look uninstalled, as on a GPU box. A ``None`` entry in
# sys.modules makes every ``import`` of them raise ImportError (at module top or inside a
# function), and makes ``importlib.util.find_spec`` report them absent, which is what
# libraries probing for optional packages (torch._dynamo does) see on such a box.
PRELUDE = f"""
import sys

for name in {BLOCKED!r}:
    sys.modules[name] = None
"""

RUN = """
import json
import crystal_pipeline.model, crystal_pipeline.plates.labelling, crystal_pipeline.tensors
import crystal_pipeline.training
from crystal_pipeline import tensors
from crystal_pipeline.cli import main

data, plate, out = sys.argv[1:4]
assert main(["train", "--tensors", data, "--out", out + "/model.pt", "--preset", "smoke",
             "--set", "updates=2", "--set", "augment=false", "--quiet"]) == 0
assert main(["label", plate, "--model", out + "/model.pt", "--out", out + "/report", "--workers", "0"]) == 0
val = tensors.read_split(data + "/tensors/r32/val", 32)
print(json.dumps({"val_class_ids": val.class_ids.tolist(),
                  "loaded": sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in %r)}))
""" % (BLOCKED,)


def test_blocker_really_blocks():
    for name in BLOCKED:
        done = subprocess.run([sys.executable, "-c", PRELUDE + f"import {name}"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode != 0 and f"import of {name} halted" in done.stderr


def test_train_and_label_without_dagster_duckdb_or_pandas(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    res_dir = tmp_path / "data" / "tensors" / "r32"
    pixels = rng.integers(0, 256, (24, 32, 32), dtype=np.uint8)
    tensors.write_split(res_dir, "train", [f"t{i}" for i in range(16)], rng.integers(1, 11, 16), pixels[:16])
    val_ids = rng.integers(1, 11, 8)
    tensors.write_split(res_dir, "val", [f"v{i}" for i in range(8)], val_ids, pixels[16:])
    tensors.save_stats(res_dir / "stats.npz", *tensors.compute_stats(res_dir / "train"))
    plate = tmp_path / "P1"
    plate.mkdir()
    for well in ("A01", "A02", "B01"):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(plate / f"{well}.png")

    done = subprocess.run([sys.executable, "-c", PRELUDE + RUN, str(tmp_path / "data"), str(plate),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["loaded"] == []
    assert summary["val_class_ids"] == val_ids.tolist()  # class ids 1..10 as written
    assert (tmp_path / "out" / "model.pt").is_file()
    assert (tmp_path / "out" / "report" / "hits.csv").read_text().count("\n") == 4  # header + 3 wells


def test_plate_labelling_benchmark_runs_without_duckdb_or_scipy(tmp_path):
    """bench/label_plate.py is how a GPU session measures the half-second plate and the plate
    batch: it must run where only torch, numpy, pyarrow and Pillow are installed (no warehouse
    write there). Here on the CPU, with a 96-well plate and a batch of two plates."""
    from pathlib import Path

    from PIL import Image

    from crystal_pipeline.wells import all_wells

    rng = np.random.default_rng(1)
    plate = tmp_path / "P96"
    plate.mkdir()
    for well in all_wells(96):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(plate / f"{well.name}.png")
    bench = Path(__file__).resolve().parents[2] / "bench"
    prelude = PRELUDE.replace(repr(BLOCKED), repr(BLOCKED + ("scipy",)))
    run = (f"import runpy\nsys.path.insert(0, {str(bench)!r})\n"
           f"sys.argv = ['label_plate.py', '--plate', {str(plate)!r}, '--wells', '96', '--repeats', '1',"
           f" '--workers', '0', '--skip-eager-e2e', '--plates', '2', '--batch-size', '40']\n"
           f"runpy.run_path({str(bench / 'label_plate.py')!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", prelude + run], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    end_to_end = [f for f in figures if f["figure"] == "end_to_end"]
    assert len(end_to_end) == 1 and end_to_end[0]["images"] == 96 and end_to_end[0]["quarantined"] == 0
    assert end_to_end[0]["duckdb_write_s"] is None  # no DuckDB on the box: no write, and said so
    assert {f["figure"] for f in figures} >= {"machine", "sgemm", "model_only", "decode", "end_to_end"}
    (batch,) = [f for f in figures if f["figure"] == "plate_batch"]
    assert (batch["plates"], batch["images_per_plate"], batch["batch_size"]) == (2, 96, 40)
    assert batch["plates_per_s"] > 0 and batch["path"] == end_to_end[0]["path"]
    # the same plate twice, serial decode: the same labels, bit for bit
    assert batch["max_prob_change"] == 0 and batch["classes_changed"] == 0
