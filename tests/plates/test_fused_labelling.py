"""A plate with UV pictures labelled by the fused model; the visible model ignores the UV files."""

import torch

from crystal_pipeline.ingest import archive
from crystal_pipeline.model.network import CrystalNet
from crystal_pipeline.plates.fused_labelling import NO_UV
from crystal_pipeline.plates.labelling import label_plate
from tests.ingest.test_image_files import grey_png


def test_the_fused_model_reads_each_drop_with_its_uv_picture_and_quarantines_a_drop_without(tmp_path):
    plate = tmp_path / "P"
    for value, name in enumerate(["A01", "A01.uv", "A02", "A02.uv", "A03", "B01.uv"]):
        grey_png(plate / f"{name}.png", value=30 + 40 * value)
    files = archive.scan_plate(plate)
    torch.manual_seed(0)
    fused = label_plate(files, CrystalNet(resolution=32, in_channels=2).eval(), workers=0)
    assert [r.image_id for r in fused.rows] == ["P/A01", "P/A02"]
    assert {q.image_id: q.reason for q in fused.quarantined}["P/A03"] == NO_UV
    assert "P/B01.uv.png" in {q.image_id for q in fused.quarantined}  # the lone UV picture, reported
    # The visible model labels every visible picture and counts no accepted UV file.
    visible = label_plate(files, CrystalNet(resolution=32).eval(), workers=0)
    assert [r.image_id for r in visible.rows] == ["P/A01", "P/A02", "P/A03"]
    assert [q.image_id for q in visible.quarantined] == ["P/B01.uv.png"]
    assert fused.files == visible.files == 4  # three visible pictures and the lone UV one
