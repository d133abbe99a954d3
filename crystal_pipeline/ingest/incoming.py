"""The incoming folder the imagers write to: which plates are there, and which are ready.

```
<incoming>/<plate_id>/<well>.png ...                 one imaging  -> key <plate_id>
<incoming>/<plate_id>/<inspection>/<well>.png ...    re-imaged    -> key <plate_id>@<inspection>
```

A plate is *ready* when it holds its format's number of wells times its drops per
well (``plate.json``'s format and drops, else 1536 and 1) or carries a completion marker (a file named ``COMPLETE`` or
``.complete``), and its files did not change since the previous look: an imager
still writing must not be labelled half-way. A folder with neither ``plate.json`` nor
a marker (an imager that writes neither) is also ready once none of its files changed
for the settle time (``CRYSTAL_PLATE_SETTLE_MINUTES``, default 30): it is labelled as
it is, and its report lists the wells it lacks. The signature of a plate folder is a
hash of its file names, sizes and modification times, so a corrected plate gets a
new signature (and a new run) while an unchanged one never runs twice.

A folder whose name cannot be a plate id or an inspection
(:func:`~crystal_pipeline.ingest.naming.name_part_problem`: ``x@y``, a control
character, too long) is never run: it is listed with the reason, and nothing is written.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from crystal_pipeline.ingest import archive
from crystal_pipeline.ingest.naming import name_part_problem
from crystal_pipeline.layout import plate_settle_minutes

COMPLETION_MARKERS = ("COMPLETE", ".complete")
DEFAULT_FORMAT = 1536


@dataclass(frozen=True)
class PlateFolder:
    key: str
    plate_id: str
    inspection: str | None
    path: Path
    image_files: int
    expected_wells: int
    has_marker: bool
    signature: str
    refused: str | None = None  # why the folder's name cannot be a plate id or inspection
    declared: bool = False  # a plate.json (here or in the plate folder) says how many wells to expect
    newest_mtime: float = 0.0  # the latest modification time of its files, seconds since the epoch

    @property
    def complete(self) -> bool:
        return self.has_marker or self.image_files >= self.expected_wells

    def settled(self, now: float, settle_s: float) -> bool:
        """Labelled as it is: no plate.json and no marker to wait for, and unchanged for ``settle_s``."""
        return (not self.declared and not self.has_marker and self.image_files > 0
                and now - self.newest_mtime >= settle_s)

    def why_not_complete(self) -> str:
        return (f"{self.image_files} of {self.expected_wells} wells and no completion marker "
                f"({' or '.join(COMPLETION_MARKERS)})")


def _signature(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def folder_signature(path: Path) -> str:
    """The signature of one plate folder as :func:`find_plates` computes it (its files only)."""
    return _signature(sorted(p for p in Path(path).iterdir() if p.is_file()))


def _folder(key: str, plate_id: str, inspection: str | None, path: Path, plate_dir: Path) -> PlateFolder | None:
    entries = sorted(p for p in path.iterdir() if p.is_file())
    images = [p for p in entries if archive.is_image_file(p)]
    marker = any((path / m).exists() for m in COMPLETION_MARKERS)
    if not images and not marker:
        return None
    fmt = archive.read_plate_format(path) or archive.read_plate_format(plate_dir) or DEFAULT_FORMAT
    drops = archive.read_plate_drops(path) or archive.read_plate_drops(plate_dir) or 1
    declared = (path / archive.PLATE_JSON).is_file() or (plate_dir / archive.PLATE_JSON).is_file()
    newest = max((p.stat().st_mtime for p in entries), default=0.0)
    return PlateFolder(key, plate_id, inspection, path, len(images), fmt * drops, marker, _signature(entries),
                       declared=declared, newest_mtime=newest)


def find_plates(incoming_dir: Path) -> list[PlateFolder]:
    """Every plate imaging under the incoming folder, complete or not, in key order."""
    incoming_dir = Path(incoming_dir)
    if not incoming_dir.is_dir():
        return []
    found: list[PlateFolder] = []
    for plate_dir in sorted(p for p in incoming_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        refused = name_part_problem("plate id", plate_dir.name)
        if refused:
            found.append(_refused(plate_dir, plate_dir.name, refused))
            continue
        top = _folder(plate_dir.name, plate_dir.name, None, plate_dir, plate_dir)
        if top is not None and top.image_files:
            found.append(top)
        for sub in sorted(p for p in plate_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            refused = name_part_problem("inspection", sub.name)
            if refused:
                found.append(_refused(sub, f"{plate_dir.name}/{sub.name}", refused))
                continue
            key = archive.plate_key(plate_dir.name, sub.name)
            folder = _folder(key, plate_dir.name, sub.name, sub, plate_dir)
            if folder is not None:
                found.append(folder)
    return found


def _refused(path: Path, shown: str, why: str) -> PlateFolder:
    """A folder listed only to say why it never runs; its key is the quoted folder path (never a partition)."""
    return PlateFolder(repr(shown), path.name, None, path, 0, 0, False, "", refused=why)


def plate_folder_path(incoming_dir: Path, key: str) -> Path:
    plate_id, inspection = archive.split_plate_key(key)
    return Path(incoming_dir) / plate_id / inspection if inspection else Path(incoming_dir) / plate_id


@dataclass(frozen=True)
class SensorDecision:
    ready: list[PlateFolder]
    skipped: dict[str, str]  # key -> why
    seen: dict[str, str]  # key -> signature, the next cursor


def decide(plates: list[PlateFolder], previous: dict[str, str], settle_s: float | None = None,
           now: float | None = None) -> SensorDecision:
    """Which plates to label now, given the signatures seen on the previous tick.

    A plate is requested once it is complete (or :meth:`PlateFolder.settled` for
    ``settle_s`` seconds, default ``CRYSTAL_PLATE_SETTLE_MINUTES``) and its signature equals
    the previous tick's (stable). Deduplication of already-labelled signatures is the run key's job.
    """
    if settle_s is None:
        settle_s = plate_settle_minutes() * 60
    now = time.time() if now is None else now
    ready, skipped, seen = [], {}, {}
    for plate in plates:
        if plate.refused:
            skipped[plate.key] = f"refused: {plate.refused}; rename the folder"
            continue
        seen[plate.key] = plate.signature
        if not plate.complete and not plate.settled(now, settle_s):
            skipped[plate.key] = "incomplete: " + plate.why_not_complete() + (
                "" if plate.declared else f", labelled as it is once unchanged for {settle_s / 60:g} min")
        elif previous.get(plate.key) != plate.signature:
            skipped[plate.key] = "files changed since the last tick; waiting one more tick for them to settle"
        else:
            ready.append(plate)
    return SensorDecision(ready, skipped, seen)

