"""Writing a whole synthetic raw archive, or one new plate for the incoming folder.

Every image comes from a generator seeded by (seed, plate id, well), so the bytes do
not depend on how the work was split across processes, and ``write_plate`` with the
archive's seed reproduces that archive's plate exactly. Wells are rendered by
:mod:`crystal_pipeline.synthetic.render_pool`. Every file is written atomically
(:mod:`crystal_pipeline.files`), and ``plate.json`` comes last, so a folder watcher
never sees half an image or a plate that looks complete before it is. The CSVs' rows are
written plate by plate as plates finish (:class:`_PlateRows`), so the generator's memory
does not grow with the number of plates (issue 17 item 3, docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from crystal_pipeline.files import atomic_write, atomic_write_text
from crystal_pipeline.ingest.archive import SYNTHETIC_MARKER
from crystal_pipeline.classes import CLASS_NAMES, CLASSES, class_name, unanimous_class
from crystal_pipeline.wells import PLATE_FORMATS, all_wells
from crystal_pipeline.synthetic import annotation_files, geometry, metadata
from crystal_pipeline.synthetic.annotators import annotator_pool
from crystal_pipeline.synthetic.class_mix import assign_classes, normalize_mix, plate_mix
from crystal_pipeline.synthetic.imager import DEFAULT_IMAGER, imager_named
from crystal_pipeline.synthetic.render import DEFAULT_DIFFICULTY
from crystal_pipeline.synthetic.render_pool import chunks_for_plate, plate_key, run_chunks

log = logging.getLogger(__name__)

MALFORMED_SHARE = 0.005
GENERATED = ("plates", "annotations", "screens", "plates.csv", "synthetic_truth.csv", geometry.GEOMETRY_FILE,
             SYNTHETIC_MARKER)


@dataclass(frozen=True)
class PlateSummary:
    """What ``write_plate`` wrote: the latent class of every well, for scoring later."""

    plate_id: str
    plate_dir: Path
    plate_format: int
    images: int
    class_counts: dict[str, int]
    truth: tuple[tuple[str, int, float], ...]  # (well, class id, difficulty)
    seconds: float


@dataclass(frozen=True)
class ArchiveSummary:
    """What ``write_archive`` wrote; tests and the demo assert against these counts."""

    out_dir: Path
    plate_ids: tuple[str, ...]
    plate_format: int
    size: int
    seed: int
    difficulty: float
    images: int
    class_counts: dict[str, int]  # latent (rendered) class per image
    annotation_rows: int  # valid rows
    annotated_images: int
    unanimous_images: int  # all annotators gave the same attribute set, and it has a class
    unanimous_class_counts: dict[str, int]
    unanimous_correct: int  # unanimous label equals the latent class
    malformed_rows: dict[str, int]  # kind -> rows written
    numeric_well_plate: str  # annotations of this plate give wells as 1-based indices
    seconds: float = field(default=0.0, compare=False)
    imager: str = DEFAULT_IMAGER
    uv: bool = False  # a UV picture beside every well's visible one (synthetic.uv)

    @property
    def unanimous_share(self) -> float:
        return self.unanimous_images / self.annotated_images if self.annotated_images else 0.0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed_rows.values())

    def to_json(self, with_timing: bool = True) -> dict:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["unanimous_share"] = round(self.unanimous_share, 4)
        data["malformed_total"] = self.malformed_total
        if self.imager == DEFAULT_IMAGER:  # imager A's archives stay byte-identical to earlier ones
            data.pop("imager")
        if not self.uv:  # archives without UV pictures stay byte-identical to earlier ones
            data.pop("uv")
        if not with_timing:
            data.pop("seconds")
            data.pop("out_dir")
        return data


def archive_settings(raw_dir: str | os.PathLike) -> dict:
    """How a generated archive was drawn (imager, size, difficulty, seed), from its
    ``synthetic_summary.json``, so a plate added later (the demo's new plate) matches it.
    An archive without one, or from before imagers, was drawn by imager A at 256 rows."""
    path = Path(raw_dir) / "synthetic_summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    settings = {"imager": summary.get("imager", DEFAULT_IMAGER), "size": summary.get("size", 256),
                "difficulty": summary.get("difficulty", DEFAULT_DIFFICULTY)}
    if summary.get("uv"):  # a UV archive's new plate has UV pictures too
        settings["uv"] = True
    return settings


def plate_ids(count: int, prefix: str = "SYN") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(1, count + 1)]


def plate_classes(plate_id: str, seed: int, plate_format: int, mix: Mapping[int, float],
                  imager: str = DEFAULT_IMAGER) -> np.ndarray:
    """Latent class per well (row-major), fixed by seed and plate id; the plate's own mix
    strays from ``mix`` as the imager's screen says (``class_mix.plate_mix``)."""
    key = plate_key(plate_id)
    mix = plate_mix(seed, key, mix, imager_named(imager).plate_mix_concentration)
    return assign_classes(np.random.default_rng([seed, key, 0xC1A55]), plate_format, mix)


def _write_plate_json(plate_dir: Path, plate_id: str, plate_format: int, seed: int, size: int, difficulty: float,
                      imager: str = DEFAULT_IMAGER) -> None:
    info = {"format": plate_format, "plate_id": plate_id, "source": "synthetic",
            "generator": "crystal_pipeline.synthetic", "seed": seed, "image_size": size, "difficulty": difficulty}
    if imager != DEFAULT_IMAGER:  # imager A's plate.json stays byte-identical to earlier ones
        info["imager"] = imager
    atomic_write_text(plate_dir / "plate.json", json.dumps(info, indent=2) + "\n")


def _check_args(plate_format: int, size: int, seed: int, difficulty: float, imager: str = DEFAULT_IMAGER) -> None:
    imager_named(imager)  # ValueError naming the imagers
    if plate_format not in PLATE_FORMATS:
        raise ValueError(f"wells must be one of {sorted(PLATE_FORMATS)}, not {plate_format}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, not {size}")
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], not {difficulty}")


# --- public API ------------------------------------------------------------------------


def write_plate(
    plate_dir: str | os.PathLike,
    plate_id: str,
    seed: int,
    wells: int = 1536,
    size: int | None = None,
    class_mix: Mapping[int | str, float] | None = None,
    difficulty: float = DEFAULT_DIFFICULTY,
    workers: int | None = None,
    imager: str = DEFAULT_IMAGER,
    uv: bool = False,
) -> PlateSummary:
    """Write one plate's images and ``plate.json`` into ``plate_dir`` (nothing else).

    Meant for the incoming folder the plate sensor watches: no annotations, and
    ``plate.json`` appears only after every image is in place. ``uv``: a UV picture
    ``<well>.uv.png`` beside every visible one (:mod:`.uv`).
    """
    size = imager_named(imager).default_size if size is None else size
    _check_args(wells, size, seed, difficulty, imager)
    imager = imager_named(imager).name
    started = time.perf_counter()
    plate_dir = Path(plate_dir)
    plate_dir.mkdir(parents=True, exist_ok=True)
    classes = plate_classes(plate_id, seed, wells, normalize_mix(class_mix, imager), imager)
    chunks = chunks_for_plate(plate_dir, plate_id, seed, wells, size, difficulty, classes, None, imager, uv)
    results: dict[int, tuple[int, float]] = {}

    def done(_plate_id, rows):
        for index, class_id, hardness, *_ in rows:
            results[index] = (class_id, hardness)

    run_chunks(chunks, workers, done)
    _write_plate_json(plate_dir, plate_id, wells, seed, size, difficulty, imager)
    names = [w.name for w in all_wells(wells)]
    truth = tuple((names[i], results[i][0], round(results[i][1], 4)) for i in range(wells))
    counts = Counter(class_name(c) for _, c, _ in truth)
    seconds = time.perf_counter() - started
    log.info("plate %s: %d images in %.1f s -> %s", plate_id, wells, seconds, plate_dir)
    return PlateSummary(plate_id, plate_dir, wells, wells, {n: counts.get(n, 0) for n in CLASS_NAMES}, truth, seconds)


def write_archive(
    out_dir: str | os.PathLike,
    plates: int = 4,
    seed: int = 0,
    wells: int = 1536,
    size: int | None = None,
    class_mix: Mapping[int | str, float] | None = None,
    difficulty: float = DEFAULT_DIFFICULTY,
    workers: int | None = None,
    malformed_share: float = MALFORMED_SHARE,
    plate_prefix: str = "SYN",
    overwrite: bool = False,
    imager: str = DEFAULT_IMAGER,
    uv: bool = False,
) -> ArchiveSummary:
    """Write a raw archive in DESIGN.md's input format under ``out_dir``.

    Layout: ``plates/<plate_id>/<well>.png`` + ``plate.json``, ``annotations/<plate_id>.csv``,
    ``plates.csv``, ``screens/<screen>.csv``; beside them, outside the input format,
    ``synthetic_truth.csv`` (latent class and difficulty per image), ``synthetic_geometry.csv``
    (where each drop and crystal was drawn: :mod:`.geometry`) and ``synthetic_summary.json``. ``imager`` ('A', the default, or 'B': :mod:`.imager`) is the
    lab whose camera takes the pictures. Refuses to write over an earlier archive unless
    ``overwrite`` (which removes only the paths this function writes). ``uv``: a UV picture
    ``<well>.uv.png`` beside every visible one, and salt crystals in some drops (:mod:`.uv`);
    without it the archive's bytes are what they were.
    """
    size = imager_named(imager).default_size if size is None else size
    _check_args(wells, size, seed, difficulty, imager)
    imager = imager_named(imager).name
    if plates < 1:
        raise ValueError("plates must be at least 1")
    started = time.perf_counter()
    out = Path(out_dir)
    _clear(out, overwrite)
    mix = normalize_mix(class_mix, imager)
    ids = plate_ids(plates, plate_prefix)
    numeric_plate = ids[1] if len(ids) > 1 else ids[0]
    # The staging folder is hidden and inside ``out`` (same file system, so the final files'
    # renames stay atomic); it is gone when this returns, whether or not it succeeds.
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".rows-"))
    try:
        tables = _PlateRows(out, staging, wells, numeric_plate)
        _render_plates(out, ids, seed, wells, size, difficulty, mix, workers, started, tables, imager, uv)
        malformed = tables.finish(ids, seed, wells, plate_prefix, malformed_share)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = ArchiveSummary(
        out_dir=out,
        plate_ids=tuple(ids),
        plate_format=wells,
        size=size,
        seed=seed,
        difficulty=difficulty,
        images=len(ids) * wells,
        class_counts={class_name(c): tables.class_counts.get(c, 0) for c in CLASSES},
        annotation_rows=tables.valid_rows,
        annotated_images=len(ids) * wells,
        unanimous_images=sum(tables.unanimous.values()),
        unanimous_class_counts={class_name(c): tables.unanimous.get(c, 0) for c in CLASSES},
        unanimous_correct=tables.unanimous_correct,
        malformed_rows=malformed,
        numeric_well_plate=numeric_plate,
        seconds=time.perf_counter() - started,
        imager=imager,
        uv=uv,
    )
    atomic_write_text(out / SYNTHETIC_MARKER, json.dumps(summary.to_json(with_timing=False), indent=2) + "\n")
    log.info("archive %s: %d images, %d annotation rows (+%d malformed), %.0f%% unanimous, %.1f s",
             out, summary.images, tables.valid_rows, summary.malformed_total, 100 * summary.unanimous_share,
             summary.seconds)
    return summary


def _clear(out: Path, overwrite: bool) -> None:
    """Remove an earlier archive's paths (only with ``overwrite``) and create the folders."""
    existing = [out / name for name in GENERATED if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds an archive ({existing[0].name}); pass overwrite=True")
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for sub in ("plates", "annotations", "screens"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _render_plates(out: Path, ids: list[str], seed: int, wells: int, size: int, difficulty: float,
                   mix, workers: int | None, started: float, rows: "_PlateRows",
                   imager: str = DEFAULT_IMAGER, uv: bool = False) -> None:
    """Every plate's images; as each plate completes, its ``plate.json`` and its rows (to ``rows``).

    Only the plates still being rendered are held (well index -> class id, difficulty,
    annotator labels, geometry); a finished plate's rows go to ``rows`` and are dropped.
    """
    pool = annotator_pool(seed)
    chunks, pending = [], {}
    for plate_id in ids:
        plate_dir = out / "plates" / plate_id
        plate_dir.mkdir()
        classes = plate_classes(plate_id, seed, wells, mix, imager)
        chunks += chunks_for_plate(plate_dir, plate_id, seed, wells, size, difficulty, classes, pool, imager, uv)
        pending[plate_id] = wells
    results: dict[str, dict[int, tuple]] = {}

    def done(plate_id, chunk_rows):
        plate = results.setdefault(plate_id, {})
        for row in chunk_rows:
            plate[row[0]] = row[1:]
        pending[plate_id] -= len(chunk_rows)
        if pending[plate_id] == 0:
            rows.add_plate(plate_id, results.pop(plate_id))
            _write_plate_json(out / "plates" / plate_id, plate_id, wells, seed, size, difficulty, imager)
            finished = sum(1 for n in pending.values() if n == 0)
            log.info("plate %s written (%d/%d plates, %.1f s)", plate_id, finished, len(ids), time.perf_counter() - started)

    run_chunks(chunks, workers, done)


TRUTH_COLUMNS = ("plate_id", "well", "class_id", "class_name", "difficulty")


class _PlateRows:
    """The archive's CSV rows, written plate by plate as plates finish; only counters stay in memory.

    Holding every well's annotation, truth and geometry rows until the end made the
    generator's peak memory grow with the archive (0.6 GiB at 12 plates of 1536 wells,
    1.7 GiB at 107: docs/benchmarks.md). Instead each finished plate's rows go at once to
    three staging files of that plate (``staging``, removed by the caller), in the final
    files' CSV dialect; :meth:`finish` then streams them into the archive's files in plate
    order, so the bytes are those of writing every row at the end, whatever order the
    plates finish in. The broken annotation rows need only each file's count of valid
    rows to be placed (:func:`.annotation_files.malformed_plan`), so they are inserted
    while the staged rows are copied.
    """

    def __init__(self, out: Path, staging: Path, wells: int, numeric_plate: str) -> None:
        self.out = out
        self.staging = staging
        self.names = [w.name for w in all_wells(wells)]
        self.numeric_plate = numeric_plate
        self.row_counts: dict[str, int] = {}  # annotation file name -> valid rows
        self.class_counts: Counter = Counter()
        self.unanimous: Counter = Counter()  # class id -> images all annotators agreed on
        self.valid_rows = 0
        self.unanimous_correct = 0

    def _staged(self, plate_id: str, part: str) -> Path:
        return self.staging / f"{plate_id}.{part}.csv"

    def add_plate(self, plate_id: str, results: Mapping[int, tuple]) -> None:
        """Write one finished plate's rows (well index -> class id, difficulty, labels, geometry)
        to its staging files, in well order, and count them."""
        paths = {part: self._staged(plate_id, part) for part in ("annotations", "truth", "geometry")}
        with (paths["annotations"].open("w", encoding="utf-8", newline="") as a_file,
              paths["truth"].open("w", encoding="utf-8", newline="") as t_file,
              paths["geometry"].open("w", encoding="utf-8", newline="") as g_file):
            annotations = annotation_files.csv_writer(a_file, annotation_files.COLUMNS)
            truth = annotation_files.csv_writer(t_file, TRUTH_COLUMNS)
            shapes_out = annotation_files.csv_writer(g_file, geometry.COLUMNS)
            valid = 0
            for index in range(len(self.names)):
                class_id, hardness, labels, shapes = results[index]
                name = self.names[index]
                well_text = str(index + 1) if plate_id == self.numeric_plate else name
                annotations.writerows({"plate_id": plate_id, "well": well_text, "annotator": annotator,
                                       "attributes": annotation_files.attribute_field(attributes)}
                                      for annotator, attributes in labels)
                valid += len(labels)
                self.class_counts[class_id] += 1
                agreed_class = unanimous_class(attributes for _, attributes in labels)
                if agreed_class is not None:
                    self.unanimous[agreed_class] += 1
                    self.unanimous_correct += agreed_class == class_id
                truth.writerow({"plate_id": plate_id, "well": name, "class_id": class_id,
                                "class_name": class_name(class_id), "difficulty": f"{hardness:.4f}"})
                shapes_out.writerows(shape.row(plate_id, name) for shape in shapes)
        self.row_counts[f"{plate_id}.csv"] = valid
        self.valid_rows += valid

    def _staged_rows(self, plate_id: str):
        with self._staged(plate_id, "annotations").open(encoding="utf-8", newline="") as handle:
            for values in csv.reader(handle):
                yield dict(zip(annotation_files.COLUMNS, values))

    def _concatenate(self, path: Path, columns: tuple[str, ...], ids: list[str], part: str) -> None:
        """``path``: the header, then every plate's staged ``part`` rows in plate order (atomic)."""
        def write(handle) -> None:
            header = io.StringIO(newline="")
            annotation_files.csv_writer(header, columns).writeheader()
            handle.write(header.getvalue().encode("utf-8"))
            for plate_id in ids:
                with self._staged(plate_id, part).open("rb") as staged:
                    shutil.copyfileobj(staged, handle)

        atomic_write(path, write)

    def finish(self, ids: list[str], seed: int, wells: int, plate_prefix: str,
               malformed_share: float) -> dict[str, int]:
        """Write the annotation CSVs (broken rows mixed in), ``plates.csv``, the screen, the truth
        and the geometry from the staged rows. Returns the broken rows written, by kind."""
        missing = [plate_id for plate_id in ids if f"{plate_id}.csv" not in self.row_counts]
        if missing:
            raise RuntimeError(f"plates {', '.join(missing[:5])} finished without their rows")
        rng = np.random.default_rng([seed, 0xBAD])
        malformed = annotation_files.malformed_counts(rng, self.valid_rows, malformed_share)
        plan = annotation_files.malformed_plan(rng, self.row_counts, malformed, unknown_plate=f"{plate_prefix}0000")
        for plate_id in ids:
            name = f"{plate_id}.csv"
            columns = annotation_files.SHUFFLED_COLUMNS if plate_id == self.numeric_plate else annotation_files.COLUMNS
            annotation_files.write_csv(self.out / "annotations" / name, columns,
                                       annotation_files.with_malformed(self._staged_rows(plate_id), plan[name]))
        annotation_files.write_csv(self.out / "plates.csv", metadata.PLATE_COLUMNS,
                                   metadata.plate_rows(ids, wells, seed))
        annotation_files.write_csv(self.out / "screens" / f"{metadata.screen_name(wells)}.csv",
                                   metadata.SCREEN_COLUMNS, metadata.screen_rows(wells))
        self._concatenate(self.out / "synthetic_truth.csv", TRUTH_COLUMNS, ids, "truth")
        self._concatenate(self.out / geometry.GEOMETRY_FILE, geometry.COLUMNS, ids, "geometry")
        return malformed
