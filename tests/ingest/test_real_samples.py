"""The real drop photographs of tests/data/real_samples go through ingest and preprocessing like archive images."""

import shutil

import numpy as np

from crystal_pipeline.ingest import archive

from crystal_pipeline import tensors
from crystal_pipeline.ingest.image_files import ingest_files
from crystal_pipeline.wells import all_wells
from crystal_pipeline.warehouse import Warehouse
from tests.real_samples import REAL_SAMPLE_COUNT, REAL_SAMPLES



def test_real_photographs_ingest_and_preprocess(tmp_path):
    photos = sorted(p for p in REAL_SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    assert len(photos) == REAL_SAMPLE_COUNT
    plate = tmp_path / "raw" / "plates" / "REAL"
    plate.mkdir(parents=True)
    # The photos keep their bytes and extensions; only the names become wells of a 96-well plate.
    for photo, well in zip(photos, all_wells(96)):
        shutil.copy(photo, plate / f"{well.name}{photo.suffix}")
    wh = Warehouse(tmp_path / "w.duckdb")
    summary = ingest_files(wh, archive.scan_archive(tmp_path / "raw"), workers=2)
    assert summary.found == REAL_SAMPLE_COUNT and summary.quarantined_new == 0
    rows = wh.query_df("SELECT image_id, path, width, height, mode FROM images ORDER BY image_id")
    assert set(rows["mode"]) >= {"RGB", "L"}  # the GSK colour JPEGs and the greyscale DLS ones
    assert (rows["width"] >= 1224).all() and (rows["height"] >= 960).all()

    labelled = [(r.image_id, 1, "train" if i % 2 else "val", r.path) for i, r in enumerate(rows.itertuples())]
    out = tmp_path / "tensors" / "r128"
    result = tensors.write_tensors(labelled, out, 128, workers=2, splits=("train", "val"))
    assert result.failures == [] and sum(result.rows_per_split.values()) == REAL_SAMPLE_COUNT
    pixels = tensors.read_split(out / "train").pixels
    assert pixels.shape == (REAL_SAMPLE_COUNT // 2, 128, 128) and pixels.dtype == np.uint8
    assert all(p.std() > 2 for p in pixels)  # real content survived the crop and resize, not a flat image
