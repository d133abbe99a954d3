"""The small UV thumbnail shown beside a well's visible one in the plate report and review page."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Callable

from crystal_pipeline.reporting.embed import data_uri

UV_THUMBNAIL_SHARE = 45  # % of the visible thumbnail's width


def uv_thumbnail_html(visible: Path | None, image_id: str, thumbnail: Callable[[Path], bytes | None]) -> str:
    """An ``<img>`` of the drop's UV picture (``archive.uv_partner_path``), '' when it has none
    or it does not decode, or the well has no file (a row read back without its path): a
    preview must never cost the page."""
    from crystal_pipeline.ingest.archive import uv_partner_path

    path = None if visible is None else uv_partner_path(visible)
    thumb = thumbnail(path) if path is not None else None
    if not thumb:
        return ""
    return (f"<img class='uv' alt='{escape(image_id)} UV' title='UV' src='{data_uri(thumb, 'image/jpeg')}' "
            f"style='width:{UV_THUMBNAIL_SHARE}%;height:auto'>")
