"""`crystal-pipeline label` on folders and file names that must not become a plate id.

Each is refused before any model is read (the --model given does not exist: the name
error must come first), with the reason on stderr, and nothing is written anywhere
under the data dir.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from crystal_pipeline.cli import main


def plate(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("L", (8, 8), 90).save(folder / name)
    return folder


CASES = {
    "key separator in the folder": ("x@y", ["A01.png", "A02.png"], None, "holds '@'"),
    "control character in the folder": ("bad\x01id", ["A01.png"], None, "control character"),
    "an overlong folder name": ("p" * 200, ["A01.png"], None, "at most 96"),
    "a pattern naming plate ..": ("ok", ["lab_.._01A_1.png", "lab_.._02A_1.png"], "plate_well_drop", "path step"),
    "a pattern naming plate a\\b": ("ok2", ["lab_a\\b_01A_1.png"], "plate_well_drop", "path separator"),
    "a pattern naming plate x@y": ("ok3", ["lab_x@y_01A_1.png"], "plate_well_drop", "holds '@'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_label_refuses_a_hostile_plate_id_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    folder_name, files, pattern, reason = CASES[case]
    data = tmp_path / "data"
    monkeypatch.setenv("CRYSTAL_DATA_DIR", str(data))
    if pattern:
        monkeypatch.setenv("CRYSTAL_FILENAME_PATTERN", pattern)
    else:
        monkeypatch.delenv("CRYSTAL_FILENAME_PATTERN", raising=False)
    folder = plate(tmp_path / "in" / folder_name, files)
    before = sorted(p for p in tmp_path.rglob("*"))
    code = main(["label", str(folder), "--model", str(tmp_path / "no_model.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "crystal-pipeline label: error:" in err and reason in err, err
    assert "no_model" not in err  # refused before the model was looked at
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, here or anywhere under tmp


def test_label_dot_dot_names_the_real_folder_not_a_path_step(tmp_path, monkeypatch, capsys):
    """`label ..` is the parent folder, by its own name: never a report in reports/.. ."""
    from crystal_pipeline.cli.label import find_images

    monkeypatch.delenv("CRYSTAL_FILENAME_PATTERN", raising=False)
    parent = plate(tmp_path / "P42", ["A01.png"])
    (parent / "inner").mkdir()
    monkeypatch.chdir(parent / "inner")
    files, _fmt = find_images(Path(".."))
    assert {f.plate_id for f in files} == {"P42"}
