"""The raw archive's folder layout: which files are well images of which plate.

```
<raw_dir>/plates/<plate_id>/[<inspection>/]<well>[_<drop>].<png|jpg|jpeg|tif|tiff|bmp>
<raw_dir>/plates/<plate_id>/[<inspection>/]<well>[_<drop>].uv.<ext>   optional UV picture of that drop
<raw_dir>/plates/<plate_id>/plate.json      optional {"format": 96, "drops": 3, ...}
<raw_dir>/annotations/*.csv
<raw_dir>/plates.csv                        optional plate_id, protein, screen, ...
<raw_dir>/screens/<screen>.csv              optional well, cocktail, ...
```

This module only reads names and small metadata files; decoding and hashing the
images is ingest's work. It decides each file's image id and well, and which files
must be quarantined for their name alone (a well that exists on no plate, two files
for one well and drop, a plate or inspection in the name that is not its folder's, a UV
picture whose visible partner is not there: a UV picture is read only beside its visible one).
File names are read by a :class:`~crystal_pipeline.ingest.naming.FileNaming` (the
default, or the lab's ``CRYSTAL_FILENAME_PATTERN`` through ``DataLayout.naming``); the
folders still decide plate and inspection.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from crystal_pipeline import wells
from crystal_pipeline.ingest.imaging import IMAGE_EXTENSIONS
from crystal_pipeline.ingest.inspections import inspection_sort_key
from crystal_pipeline.ingest.naming import (DEFAULT_NAMING, KEY_SEPARATOR, UV, VISIBLE, FileNaming, InvalidName,
                                            check_name_part, name_part_problem)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WellFile:
    """One image file and what its name says. ``error`` set means quarantine."""

    image_id: str
    plate_id: str
    inspection: str | None
    plate_format: int | None
    well: str
    well_index: int | None
    row: int | None
    col: int | None
    path: Path
    error: str | None = None
    drop: int = 1
    plate_drops: int = 1  # drops per well of this imaging: plate.json's, else the largest found
    imaging: str = VISIBLE  # 'visible' or 'uv' (naming.IMAGING_MODES)

    @property
    def slot(self) -> str:
        """``A01`` (drop 1) or ``A01_2``: the name :func:`wells.missing_wells` counts."""
        return wells.slot_name(self.well, self.drop)

    @property
    def plate_key(self) -> str:
        return plate_key(self.plate_id, self.inspection)


def plate_key(plate_id: str, inspection: str | None) -> str:
    """``<plate_id>`` or ``<plate_id>@<inspection>``: the plate partition key."""
    return f"{plate_id}@{inspection}" if inspection else plate_id


PLATE_JSON = "plate.json"  # a plate folder's own metadata (format, drops, protein, ...)


def split_plate_key(key: str) -> tuple[str, str | None]:
    """(plate id, inspection or None) of a partition key; InvalidName when either part could
    not have come from :func:`plate_key` over checked names (``a@b@c``, ``..``, ``a/b``)."""
    plate_id, _, inspection = key.partition(KEY_SEPARATOR)
    check_name_part("plate id", plate_id)
    if inspection:
        check_name_part("inspection", inspection)
    return plate_id, inspection or None


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_plate_drops(plate_dir: Path) -> int | None:
    """``drops`` of ``plate.json`` (drops per well, e.g. 3 on a 96-well sitting-drop plate);
    None when absent or not a positive integer."""
    meta = Path(plate_dir) / PLATE_JSON
    try:
        value = json.loads(meta.read_text()).get("drops") if meta.is_file() else None
        drops = int(value) if value is not None else None
    except (ValueError, TypeError, AttributeError, OSError) as error:
        log.warning("ignoring drops in %s: %s", meta, error)
        return None
    if drops is not None and drops < 1:
        log.warning("ignoring %s: drops %s is not a positive number", meta, drops)
        return None
    return drops


def read_plate_format(plate_dir: Path) -> int | None:
    """The format declared in ``plate.json``; None when absent or unusable."""
    meta = plate_dir / PLATE_JSON
    if not meta.is_file():
        return None
    try:
        fmt = int(json.loads(meta.read_text())["format"])
    except (ValueError, KeyError, TypeError, OSError) as error:
        log.warning("ignoring %s: %s", meta, error)
        return None
    if fmt not in wells.PLATE_FORMATS:
        log.warning("ignoring %s: format %s is not one of %s", meta, fmt, sorted(wells.PLATE_FORMATS))
        return None
    return fmt


def plate_image_folders(plate_dir: Path) -> Iterator[tuple[str | None, Path]]:
    """(inspection, folder) pairs: the plate folder itself and each inspection sub-folder, in
    inspection order (:func:`~crystal_pipeline.ingest.inspections.inspection_sort_key`)."""
    yield None, plate_dir
    subs = [p for p in plate_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for sub in sorted(subs, key=lambda p: inspection_sort_key(p.name)):
        yield sub.name, sub


def scan_plate(plate_dir: Path, plate_id: str | None = None, inspection: str | None = None,
               naming: FileNaming = DEFAULT_NAMING) -> list[WellFile]:
    """Every well image of one plate folder (and its inspection sub-folders).

    With ``inspection`` given, only that imaging of the plate is read (the folder
    is then ``plate_dir`` itself). The plate format is ``plate.json``'s, else the
    smallest format holding all valid well names of that imaging; drops per well are
    ``plate.json``'s ``drops``, else the largest drop number found in that imaging.
    """
    plate_dir = Path(plate_dir)
    plate_id = plate_id or plate_dir.name
    declared = read_plate_format(plate_dir)
    drops = read_plate_drops(plate_dir)
    if inspection is not None:
        declared = declared or read_plate_format(plate_dir.parent)
        drops = drops or read_plate_drops(plate_dir.parent)
        folders = [(inspection, plate_dir)]
    else:
        folders = list(plate_image_folders(plate_dir))
    found: list[WellFile] = []
    for insp, folder in folders:
        files = sorted(p for p in folder.iterdir() if is_image_file(p))
        refused = name_part_problem("plate id", plate_id) or (insp is not None and name_part_problem("inspection", insp))
        if files and refused:  # a hostile folder name: every file quarantined with why, nothing else
            found.extend(_refused_wells(plate_id, insp, files, f"refused folder name: {refused}"))
        elif files:
            found.extend(_name_wells(plate_id, insp, files, declared, drops, naming))
    return found


def _refused_wells(plate_id: str, inspection: str | None, files: list[Path], reason: str) -> list[WellFile]:
    return [WellFile(wells.image_id(plate_id, path.name, inspection), plate_id, inspection, None,
                     path.stem, None, None, None, path, reason) for path in files]


def _parse_name(path: Path, plate_id: str, inspection: str | None, declared: int | None,
                naming: FileNaming) -> tuple[wells.Well | None, int, str | None, str]:
    """(well, drop, error, imaging) of one file name; the name's plate and inspection must be its folder's."""
    try:
        parts = naming.parse(path.stem)
        well = wells.parse_well(parts.well, declared)
    except (InvalidName, wells.InvalidWell) as error:
        return None, 1, f"unknown well name: {error}", VISIBLE
    if parts.plate is not None and parts.plate != plate_id:
        return (None, 1, f"file name {path.name!r} names plate {parts.plate!r} but lies in plate {plate_id!r}'s "
                f"folder", parts.imaging)
    if parts.inspection is not None and parts.inspection != inspection:
        return None, 1, (f"file name {path.name!r} names inspection {parts.inspection!r} but lies in the folder "
                         f"of inspection {inspection!r}"), parts.imaging
    return well, parts.drop, None, parts.imaging


def _name_wells(plate_id: str, inspection: str | None, files: list[Path], declared: int | None,
                declared_drops: int | None, naming: FileNaming) -> list[WellFile]:
    parsed = [(path, *_parse_name(path, plate_id, inspection, declared, naming)) for path in files]
    valid = [w for _, w, _, _, _ in parsed if w is not None]
    fmt = declared or (wells.smallest_format_holding(valid) if valid else None)
    drops = declared_drops or max((d for _, w, d, _, _ in parsed if w is not None), default=1)
    out: list[WellFile] = []
    taken: dict[tuple[str, str], Path] = {}
    # Visible pictures first, so a UV picture can ask whether its partner was accepted.
    for path, well, drop, error, imaging in sorted(parsed, key=lambda p: (p[4] != VISIBLE, p[0])):
        if well is None:
            # No canonical name: the file name keeps the id unique and readable.
            out.append(WellFile(wells.image_id(plate_id, path.name, inspection), plate_id, inspection, fmt,
                                path.stem, None, None, None, path, error,
                                plate_drops=drops, imaging=imaging))
            continue
        slot = wells.slot_name(well.name, drop)
        problem = None
        if (slot, imaging) in taken:
            kind = "file" if imaging == VISIBLE else f"{imaging} file"
            problem = f"duplicate {kind} for well {slot} (already {taken[slot, imaging].name})"
        elif drop > drops:
            problem = f"drop {drop} of well {well.name}, but plate.json says {drops} drops per well"
        elif imaging == UV and (slot, VISIBLE) not in taken:
            problem = f"UV picture of well {slot} without its visible picture (a UV picture is read beside one)"
        if problem:
            out.append(WellFile(wells.image_id(plate_id, path.name, inspection), plate_id, inspection, fmt,
                                well.name, well.index(fmt), well.row, well.col, path, problem, drop, drops,
                                imaging))
            continue
        taken[slot, imaging] = path
        out.append(WellFile(wells.image_id(plate_id, well.name, inspection, drop, imaging), plate_id, inspection,
                            fmt, well.name, well.index(fmt), well.row, well.col, path, None, drop, drops, imaging))
    return sorted(out, key=lambda f: f.path)


def scan_archive(raw_dir: Path, naming: FileNaming = DEFAULT_NAMING) -> list[WellFile]:
    """Every well image under ``<raw_dir>/plates``, plate by plate in name order."""
    return list(iter_archive(raw_dir, naming))


def iter_archive(raw_dir: Path, naming: FileNaming = DEFAULT_NAMING) -> Iterator[WellFile]:
    """:func:`scan_archive`'s files one plate at a time, so a scan of a large archive holds
    one plate's :class:`WellFile` s, not the archive's (``raw_images`` streams them)."""
    plates_dir = Path(raw_dir) / "plates"
    if not plates_dir.is_dir():
        raise FileNotFoundError(
            f"no plates folder at {plates_dir}: the raw archive must hold plates/<plate_id>/<well>.png "
            f"(set CRYSTAL_RAW_DIR, or run `crystal-pipeline demo-archive --out {raw_dir}`)"
        )
    for plate_dir in sorted(p for p in plates_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield from scan_plate(plate_dir, naming=naming)


SYNTHETIC_MARKER = "synthetic_summary.json"  # written by crystal_pipeline.synthetic.write_archive


def provenance(raw_dir: Path) -> str:
    """``synthetic`` for the built-in generator's archive, else the archive's path (models' ``trained_on``)."""
    return "synthetic" if (Path(raw_dir) / SYNTHETIC_MARKER).exists() else str(raw_dir)


def annotations_dir(raw_dir: Path) -> Path:
    """``<raw_dir>/annotations``: the experts' and reviewers' CSVs."""
    return Path(raw_dir) / "annotations"


def annotation_files(raw_dir: Path) -> list[Path]:
    folder = annotations_dir(raw_dir)
    return sorted(p for p in folder.glob("*.csv") if p.is_file()) if folder.is_dir() else []


def read_plates_csv(raw_dir: Path) -> dict[str, dict[str, str]]:
    """plate_id -> {protein, screen, barcode, set_up_on, ...}; empty when absent."""
    path = Path(raw_dir) / "plates.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {row["plate_id"].strip(): {k: (v or "").strip() for k, v in row.items()}
                for row in csv.DictReader(handle) if row.get("plate_id")}


def read_screen(raw_dir: Path, screen: str) -> dict[str, dict[str, str]]:
    """Canonical well name -> condition columns of one screen file; empty when absent."""
    path = Path(raw_dir) / "screens" / f"{screen}.csv"
    if not path.is_file():
        return {}
    out: dict[str, dict[str, str]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                out[wells.parse_well(row.get("well", "")).name] = {k: (v or "").strip() for k, v in row.items()}
            except wells.InvalidWell:
                continue
    return out


def plate_metadata(raw_dir: Path, plate_id: str, plate_dir: Path | None = None
                   ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """What a hit list needs beside the well: the plate's protein and screen, and each well's cocktail.

    ``plates.csv`` of the raw archive gives protein and screen; keys of the plate's own
    ``plate.json`` (if any) override them. Conditions come from ``screens/<screen>.csv``.
    """
    meta = dict(read_plates_csv(raw_dir).get(plate_id, {}))
    for folder in filter(None, [plate_dir, plate_dir.parent if plate_dir else None]):
        path = Path(folder) / "plate.json"
        if path.is_file():
            try:
                extra = json.loads(path.read_text())
            except (ValueError, OSError):
                extra = {}
            meta.update({k: str(v) for k, v in extra.items() if k in ("protein", "screen", "barcode", "set_up_on")})
            break
    conditions = read_screen(raw_dir, meta["screen"]) if meta.get("screen") else {}
    return meta, conditions


def uv_partner_path(visible: Path) -> Path | None:
    """The UV picture beside a visible one in the archive's own naming (``A01_2.png`` ->
    ``A01_2.uv.png``, any image extension), or None. For a report's thumbnail only: what
    ingest accepted is in ``images`` (``warehouse.images.uv_partners``), which also knows a
    lab's own ``CRYSTAL_FILENAME_PATTERN`` names."""
    visible = Path(visible)
    for ext in sorted({visible.suffix, *IMAGE_EXTENSIONS}, key=lambda e: e != visible.suffix):
        candidate = visible.with_name(f"{visible.stem}.uv{ext}")
        if candidate.is_file():
            return candidate
    return None
