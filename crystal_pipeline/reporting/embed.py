"""Bytes inside a page: base64 data URIs, so a report is one self-contained file.

A Dagster materialization has no folder to link a figure from, and a plate report
must survive being mailed as one file; both embed their images as ``data:`` URIs.
"""

from __future__ import annotations

import base64


def base64_text(data: bytes) -> str:
    """``data`` as standard base64 text (ASCII, no line breaks)."""
    return base64.b64encode(data).decode("ascii")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` for an ``src`` attribute or a Markdown image."""
    return f"data:{mime};base64,{base64_text(data)}"
