"""The helpers both reports and the Dagster metadata share: Markdown, HTML, data URIs, PNGs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crystal_pipeline.reporting import html, markdown
from crystal_pipeline.reporting.embed import data_uri
from crystal_pipeline.reporting.figures import figure_png, pyplot


def test_markdown_table_escapes_pipes_and_line_breaks_and_aligns():
    text = markdown.table(["name", "value|unit"], [["a|b", 1.5], ["two\nlines", None]], align="lr")
    assert text.splitlines() == [
        "| name | value\\|unit |",
        "| --- | ---: |",
        "| a\\|b | 1.5 |",
        "| two lines | None |",
    ]
    with pytest.raises(ValueError, match="align"):
        markdown.table(["a", "b"], [], align="l")


def test_key_value_table_has_an_empty_header():
    assert markdown.key_value_table([("plate", "P|1"), ("files", 3)]).splitlines() == [
        "| | |", "| --- | --- |", "| plate | P\\|1 |", "| files | 3 |"]


def test_frame_table_blanks_missing_values_and_counts_rows_left_out():
    frame = pd.DataFrame({"image_id": ["a", "b", "c"], "error": [None, "bad|file", np.nan]})
    text = markdown.frame_table(frame, max_rows=2)
    assert text.splitlines() == ["| image_id | error |", "| --- | --- |", "| a |  |", "| b | bad\\|file |", "",
                                 "_1 more rows not shown_"]
    assert markdown.frame_table(frame.head(0)) == "_none_"
    assert "more rows" not in markdown.frame_table(frame)


def test_images_embed_their_exact_bytes():
    png = figure_png(pyplot().figure())
    uri = data_uri(png)
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",", 1)[1]) == png
    assert markdown.image(png, "roc") == f"![roc]({uri})"
    jpeg = b"\xff\xd8jpeg"
    tag = html.embedded_image(jpeg, "P1/A01 <x>", "image/jpeg")
    assert tag == "<img alt='P1/A01 &lt;x&gt;' src='data:image/jpeg;base64," + base64.b64encode(jpeg).decode() + "'>"
    assert markdown.blocks("a", "", "b") == "a\n\nb"


def test_html_rows_escape_every_cell():
    assert html.row(["<b>", "a&b"]) == "<tr><td>&lt;b&gt;</td><td>a&amp;b</td></tr>"
    assert html.row(["well", "x'y"], row_header=True) == "<tr><th>well</th><td>x&#39;y</td></tr>"
    assert html.row(["#", "p"], "th") == "<tr><th>#</th><th>p</th></tr>"
    assert html.escape(3) == "3"


def test_figure_png_is_agg_png_and_closes_the_figure():
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    before = len(plt.get_fignums())
    png = figure_png(fig)
    assert len(plt.get_fignums()) == before - 1
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 100
