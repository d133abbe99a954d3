"""What the annotations sensor needs to know about ``<raw_dir>/annotations/``: has anything
changed, and how many reviewed labels arrived since a given moment.

- :func:`annotations_signature` is a content signature (each CSV's name and sha256), so
  touching a file or copying the same bytes again changes nothing, and any edit does.
- :func:`reviewed_wells_since` counts the wells (plate, inspection, well) that rows with
  annotator ``review:<name>`` name in files that arrived after ``since``. A file
  "arrived" at the later of its mtime and its ctime: a file copied in with its old mtime
  kept (``cp -p``, a synced folder) still arrives when it lands in the folder. One well
  reviewed in two files counts once. Rows are counted as written; the reader decides
  later whether each one is usable (bad rows become ``annotation_errors``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from crystal_pipeline.files import file_sha256
from crystal_pipeline.ingest.reviews import is_review


def annotations_signature(files: Iterable[Path]) -> str:
    """A short hash of every annotation file's name and content (empty folder: a fixed value)."""
    listing = sorted((Path(f).name, file_sha256(f)) for f in files)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def arrived_at(path: Path) -> datetime:
    """When a file landed in the folder (UTC): the later of its mtime and ctime."""
    st = Path(path).stat()
    return datetime.fromtimestamp(max(st.st_mtime, st.st_ctime), tz=timezone.utc)


def reviewed_wells_since(files: Iterable[Path], since: datetime | None) -> int:
    """Distinct wells reviewed in files that arrived after ``since`` (None: every file)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)  # the warehouse stores UTC without a zone
    wells: set[tuple[str, str, str]] = set()
    for path in files:
        if since is not None and arrived_at(path) <= since:
            continue
        wells.update(_reviewed_wells(Path(path)))
    return len(wells)


def _reviewed_wells(path: Path) -> set[tuple[str, str, str]]:
    """(plate_id, inspection, well) of the review rows of one CSV; an unreadable file has none."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = csv.DictReader(handle)
            rows.fieldnames = [(h or "").strip().lower() for h in rows.fieldnames or []]
            return {((r.get("plate_id") or "").strip(), (r.get("inspection") or "").strip(),
                     (r.get("well") or "").strip().upper())
                    for r in rows if is_review(r.get("annotator") or "")}
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()
