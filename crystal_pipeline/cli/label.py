"""``crystal-pipeline label``: label one plate folder and write its report, no Dagster.

Examples::

    crystal-pipeline label data/incoming/P0001 --model data/models/v1/model.pt
    crystal-pipeline label ../shared/real_samples --model model.pt --out /tmp/samples --threshold 0.3
    crystal-pipeline label data/incoming/P0001 --model data/models/v1/model.onnx --engine onnx

A folder of well-named files (``A01.png``, ``AF48.jpg``, ``17.tif``, drops as
``A01_2.png``) is a plate: the report has a plate map and counts missing wells and
drops. File names are read with ``CRYSTAL_FILENAME_PATTERN`` when set (a regular
expression or a preset such as ``plate_well_drop`` for ``97wo_01A_1.jpg``); when its
``plate`` group gives one plate for every file, that is the plate id, else the folder's
name. A folder whose file names are not
wells (loose photographs) is labelled file by file: the ids are the file names and
the report has the ranked list and thumbnails but no map. Nothing is written into
the input folder; the default output is ``<data_dir>/reports/plates/<plate>/``. A plate
id that cannot be a folder or a key (``x@y``, a pattern's ``..``; see
:func:`crystal_pipeline.ingest.naming.name_part_problem`) is an error before any work.

torch is imported inside :func:`run` so that listing the commands stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_THRESHOLD = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plate_dir", help="a plate folder (well-named images) or a folder of loose images")
    parser.add_argument("--model", required=True, help="a CrystalNet artifact (models/<version>/model.pt)")
    parser.add_argument("--out", help="report folder (default: <data_dir>/reports/plates/<plate folder name>)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per model batch (default 128)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="crystal_prob that makes a hit (default: the model's crystal_threshold, else "
                             f"{DEFAULT_THRESHOLD})")
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: all CPUs)")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--marco-labels", default=None,
                        help="a CSV with file,marco_label[,label_quality] columns: write marco_vs_labels.csv/.md "
                             "beside the report (default: the folder's labels.csv when it has those columns)")
    parser.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                        help="torch (a model.pt artifact) or onnx (a file from `crystal-pipeline export`, run by "
                             "ONNX Runtime on the CPU)")
    # Checked in run() against crystal_pipeline.model.precision.PRECISIONS (the model package imports torch).
    parser.add_argument("--precision", default="auto", metavar="{auto,fp32,bf16}",
                        help="auto (bf16 where the CPU has AMX or AVX512-BF16, or on CUDA; else fp32), fp32, or bf16 "
                             "(on a CPU without bf16 units: emulated, several times slower; docs/decisions.md)")


def run(args: argparse.Namespace) -> int:
    plate_dir = Path(args.plate_dir)
    if not plate_dir.is_dir():
        return _fail(f"not a folder: {plate_dir}")
    if args.batch_size < 1:
        return _fail(f"--batch-size must be positive, got {args.batch_size}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        return _fail(f"--threshold must be within [0, 1], got {args.threshold}")

    from crystal_pipeline import model as model_lib
    from crystal_pipeline.ingest import archive
    from crystal_pipeline.model.precision import PRECISIONS
    from crystal_pipeline.plates import labelling
    from crystal_pipeline.plates import report as plate_report
    from crystal_pipeline.layout import DataLayout

    if args.precision not in PRECISIONS:
        return _fail(f"--precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
    # Names first (a listing, no decoding): a hostile plate id is refused before any model is read.
    try:  # a bad pattern, or a plate id that must never become a folder or a key
        naming = DataLayout.from_env().naming
        files, plate_format = find_images(plate_dir, naming)
    except ValueError as error:
        return _fail(str(error))
    inspections = sorted({f.inspection for f in files if f.inspection})
    if len(inspections) > 1 or (inspections and any(f.inspection is None for f in files)):
        return _fail(f"{plate_dir} holds several imagings ({', '.join(inspections)}); label one at a time, "
                     f"e.g. crystal-pipeline label {plate_dir / inspections[0]}")
    if not files:
        return _fail(f"no image files ({', '.join(sorted(_extensions()))}) in {plate_dir}")
    key = archive.plate_key(files[0].plate_id, files[0].inspection)
    try:
        out = Path(args.out) if args.out else DataLayout.from_env().plate_report_dir(key)
    except ValueError as error:
        return _fail(str(error))

    try:  # before any decoding: a wrong path must not cost a plate's worth of work first
        net = _open_model(args)
    except (model_lib.ArtifactError, RuntimeError) as error:
        return _fail(str(error))
    meta = getattr(net, "artifact_meta", {}) or {}
    threshold = args.threshold if args.threshold is not None else model_lib.calibration_of(meta)[1]
    model_version = str(meta.get("model_version") or Path(args.model).resolve().parent.name)

    try:
        labels = labelling.label_plate(files, net, batch_size=args.batch_size, workers=args.workers,
                                       precision=args.precision, locate_threshold=threshold)
    except ValueError as error:  # a precision the engine cannot run (bf16 with --engine onnx)
        return _fail(str(error))
    report = plate_report.write_plate_report(
        out, key, plate_format, labels, model_version=model_version,
        synthetic_model=meta.get("trained_on") == "synthetic", crystal_threshold=threshold,
        plate_meta=_plate_meta(plate_dir),
    )
    t = labels.timings
    missing = len(labelling.missing_wells(files, plate_format)) if plate_format else 0
    print(f"labelled {len(labels.rows)} images, {len(labels.quarantined)} quarantined"
          + ((f", {missing} missing wells" if labels.drops == 1 else f", {missing} missing well-drops "
              f"({labels.drops} drops per well)") if plate_format else " (loose images: no plate map)")
          + f"; {len(report.hits)} hits at crystal_prob >= {threshold:.3f}, {len(report.review_first)} to review first")
    print(f"{t.images_per_s:.1f} images/s ({t.path}: {t.total_s:.2f} s in all, model {t.model_s:.2f} s, "
          f"waiting for decode {t.decode_wait_s:.2f} s)")
    print(f"engine {t.engine}, precision {t.precision} ({t.precision_reason})")
    _marco_beside_labels(args, plate_dir, out, labels, model_version)
    print(f"report: {report.paths['html']}")
    print(f"hit list: {report.paths['csv']}")
    return 0


def _marco_beside_labels(args: argparse.Namespace, plate_dir: Path, out: Path, labels, model_version: str) -> None:
    """With MARCO labels (``--marco-labels`` or the folder's labels.csv), write and print the model's
    four-class outcome beside them (crystal_pipeline.plates.marco_labels): a fact, not a target."""
    from crystal_pipeline.plates import marco_labels

    path = Path(args.marco_labels) if args.marco_labels else plate_dir / marco_labels.LABELS_FILE
    truth = marco_labels.read_marco_labels(path) if path.is_file() else None
    if truth is None:
        if args.marco_labels:
            print(f"warning: {path} has no file,marco_label columns; no MARCO comparison", file=sys.stderr)
        return
    comparison = marco_labels.compare(labels.rows, truth)
    paths = marco_labels.write_comparison(out, comparison, model_version)
    agreement = ", ".join(f"{k} {a}/{n}" for k, (a, n) in comparison.agreement().items())
    print(f"MARCO four-class outcome beside {path.name} (agree/images: {agreement or 'none labelled'}); "
          f"a fact about this model on these images, not a target: {paths['marco_md']}")


def _open_model(args: argparse.Namespace):
    """The model ``--engine`` names: a torch artifact on ``--device``, or an ONNX Runtime session
    (onnxruntime imported only then, so the torch path runs without it)."""
    if args.engine == "onnx":
        from crystal_pipeline.model.onnx_engine import OnnxCrystalNet

        return OnnxCrystalNet(args.model)
    from crystal_pipeline import model as model_lib

    return model_lib.load(args.model, args.device)


def find_images(folder: Path, naming=None):
    """(files, plate format or None): the folder as a plate when any name is a well.

    With no well name at all the folder is loose photographs: each file is its own
    id (its file name) and nothing is quarantined for its name.

    RefusedName (a ValueError) when the plate id, the folder's name or a file name's
    ``plate`` group, cannot be a plate id: nothing is labelled under such a name.
    """
    from crystal_pipeline.ingest import archive
    from crystal_pipeline.ingest.naming import DEFAULT_NAMING, check_name_part

    naming = naming or DEFAULT_NAMING
    folder_name = Path(os.path.abspath(folder)).name  # `label .` and `label ..` name the real folder
    plate_id = check_name_part("plate id", _plate_named(folder, folder_name, naming))
    files = archive.scan_plate(folder, plate_id, naming=naming)
    if any(f.row is not None for f in files):
        return files, files[0].plate_format
    loose = sorted(p for p in folder.iterdir() if archive.is_image_file(p))
    return [archive.WellFile(image_id=p.name, plate_id=check_name_part("plate id", folder_name), inspection=None,
                             plate_format=None,
                             well=p.stem, well_index=None, row=None, col=None, path=p) for p in loose], None


def _plate_named(folder: Path, folder_name: str, naming) -> str:
    """The plate id the file names agree on (the naming's ``plate`` group), else the folder's name;
    a file whose ``plate`` group is refused (RefusedName) stops the command rather than being skipped."""
    from crystal_pipeline.ingest import archive
    from crystal_pipeline.ingest.naming import InvalidName, RefusedName

    if not naming.names_plate:
        return folder_name
    plates = set()
    for path in folder.iterdir():
        if archive.is_image_file(path):
            try:
                plates.add(naming.parse(path.stem).plate)
            except RefusedName:
                raise
            except InvalidName:
                continue
    return plates.pop() if len(plates) == 1 else folder_name


def _plate_meta(plate_dir: Path) -> dict:
    import json

    meta = plate_dir / "plate.json"
    try:
        data = json.loads(meta.read_text()) if meta.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _extensions():
    from crystal_pipeline.ingest.imaging import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def _fail(message: str) -> int:
    print(f"crystal-pipeline label: error: {message}", file=sys.stderr)
    return 2
