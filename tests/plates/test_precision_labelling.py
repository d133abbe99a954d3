"""Precision chosen from the CPU's flags and reported; threaded decode gives the serial labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crystal_pipeline.ingest import imaging
from crystal_pipeline.ingest.archive import scan_plate
from crystal_pipeline.model import CrystalNet, save_artifact
from crystal_pipeline.model import precision as precision_lib
from crystal_pipeline.model.bf16_cpu import Bf16CrystalNet
from crystal_pipeline.model.fast_cpu import FastCrystalNet
from crystal_pipeline.model.precision import choose_precision, cpu_flags, cpu_has_bf16_units
from crystal_pipeline.plates.labelling import label_plate

RES = 64
ZEN3_FLAGS = "fpu sse sse2 avx avx2 fma bmi2 sha_ni vaes vpclmulqdq".split()
SAPPHIRE_RAPIDS_FLAGS = ZEN3_FLAGS + "avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8".split()


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    """40 wells of a synthetic plate, one of them corrupt."""
    from crystal_pipeline.synthetic import write_plate

    plate_dir = tmp_path_factory.mktemp("incoming") / "P2"
    write_plate(plate_dir, "P2", seed=5, wells=96, size=64, workers=1)
    for extra in sorted(plate_dir.glob("*.png"))[40:]:
        extra.unlink()
    (plate_dir / "A05.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return plate_dir


@pytest.fixture(scope="module")
def model() -> CrystalNet:
    torch.manual_seed(1)
    net = CrystalNet(resolution=RES).eval()
    with torch.no_grad():
        net.out.weight.mul_(30.0)  # spread probabilities, so agreement is not trivially about ties
    return net


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_auto_follows_the_cpu_flags_and_a_forced_choice_is_honoured():
    assert not cpu_has_bf16_units(ZEN3_FLAGS) and cpu_has_bf16_units(SAPPHIRE_RAPIDS_FLAGS)
    assert cpu_has_bf16_units([*ZEN3_FLAGS, "avx512_bf16"])  # Zen 4 / Cooper Lake: no AMX, still bf16 units
    assert choose_precision("auto", "cpu", ZEN3_FLAGS).precision == "fp32"
    assert choose_precision("auto", "cpu", SAPPHIRE_RAPIDS_FLAGS).precision == "bf16"
    assert choose_precision("fp32", "cpu", SAPPHIRE_RAPIDS_FLAGS).precision == "fp32"
    forced = choose_precision("bf16", "cpu", ZEN3_FLAGS)
    assert forced.precision == "bf16" and forced.emulated and "emulated" in forced.reason
    assert not choose_precision("bf16", "cpu", SAPPHIRE_RAPIDS_FLAGS).emulated
    assert choose_precision("auto", "cuda", ZEN3_FLAGS).precision == "bf16"
    assert choose_precision("fp32", "cuda").precision == "fp32"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        choose_precision("fp16", "cpu", ZEN3_FLAGS)


@pytest.mark.parametrize("flags, engine, precision", [(ZEN3_FLAGS, "cpu-fast", "fp32"),
                                                      (SAPPHIRE_RAPIDS_FLAGS, "cpu-bf16", "bf16")])
def test_label_plate_runs_and_reports_what_auto_chose(plate, model, monkeypatch, flags, engine, precision):
    monkeypatch.setattr(precision_lib, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": frozenset(flags))
    labels = label_plate(scan_plate(plate), model, batch_size=16, workers=2)
    assert (labels.timings.engine, labels.timings.precision) == (engine, precision)
    assert labels.timings.precision_reason.startswith("auto")
    assert len(labels.rows) == 39 and len(labels.quarantined) == 1


def test_bf16_agrees_with_fp32_within_bf16_rounding(plate, model):
    files = scan_plate(plate)
    fp32 = label_plate(files, model, batch_size=16, workers=2, precision="fp32")
    bf16 = label_plate(files, model, batch_size=16, workers=2, precision="bf16")
    assert (fp32.timings.precision, bf16.timings.precision) == ("fp32", "bf16")
    diff = np.abs(fp32.probs - bf16.probs).max()
    assert 0 < diff < 0.05  # bf16 really ran (not fp32 again), and only rounded
    agree = np.mean(fp32.probs.argmax(1) == bf16.probs.argmax(1))
    assert agree >= 0.9
    # The output layer stays fp32 by default; asking for it in bf16 too is allowed.
    assert Bf16CrystalNet.from_model(model, keep_fp32=()).keep_fp32 == frozenset()
    with pytest.raises(ValueError, match="unknown layers"):
        Bf16CrystalNet.from_model(model, keep_fp32=("conv9",))


def test_threaded_decode_gives_the_serial_probabilities(plate, model):
    """The overlapped path (decode threads feeding the model thread) equals decoding every file
    first in this thread and running the same batches through the same fast model."""
    files = scan_plate(plate)
    fast = FastCrystalNet.from_model(model, threads=2)
    try:
        overlapped = label_plate(files, fast, batch_size=16, workers=2)
        again = label_plate(files, fast, batch_size=16, workers=2)  # the decode pool outlives a plate
        readable, pixels = [], []
        for f in files:
            try:
                pixels.append(imaging.load_grey(f.path, RES))
                readable.append(f.image_id)
            except imaging.UnreadableImage:
                pass
        serial = np.concatenate([fast.predict_proba(np.stack(pixels[i:i + 16])) for i in range(0, len(pixels), 16)])
    finally:
        fast.close()
    assert [r.image_id for r in overlapped.rows] == readable
    assert np.array_equal(overlapped.probs, serial) and np.array_equal(again.probs, serial)
    assert imaging.decode_pool(2) is imaging.decode_pool(2)


def test_cli_precision_lands_in_the_report_and_beside_hits_csv(plate, model, tmp_path, capsys):
    from crystal_pipeline.cli import main

    path = save_artifact(tmp_path / "v1" / "model.pt", model, created_at="2026-12-03T00:00:00+00:00",
                         preset="smoke", trained_on="synthetic")
    out = tmp_path / "report"
    assert main(["label", str(plate), "--model", str(path), "--out", str(out), "--precision", "fp32"]) == 0
    assert "engine cpu-fast, precision fp32 (fp32 asked for)" in capsys.readouterr().out
    meta = json.loads((out / "hits.meta.json").read_text())
    assert (meta["engine"], meta["precision"], meta["labelled"]) == ("cpu-fast", "fp32", 39)
    with open(out / "hits.csv", newline="") as handle:
        assert next(csv.reader(handle))[:2] == ["rank", "image_id"]  # the CSV itself is unchanged
    assert "cpu-fast, fp32" in (out / "report.md").read_text()
    assert main(["label", str(plate), "--model", str(path), "--out", str(out), "--precision", "fp16"]) == 2
    assert "--precision must be one of auto, fp32, bf16" in capsys.readouterr().err


def test_an_onnx_model_runs_fp32_and_refuses_bf16(plate):
    class FakeOnnx:  # what label_plate reads of model.onnx_engine.OnnxCrystalNet
        output_calibrated, resolution, artifact_meta = True, RES, {}

        def predict_proba(self, pixels):
            return np.full((len(pixels), 10), 0.1, dtype=np.float32)

    labels = label_plate(scan_plate(plate), FakeOnnx(), batch_size=16, workers=0)
    assert (labels.timings.engine, labels.timings.precision) == ("onnxruntime", "fp32")
    with pytest.raises(ValueError, match="ONNX engine runs in fp32"):
        label_plate(scan_plate(plate), FakeOnnx(), precision="bf16")
