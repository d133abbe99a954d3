"""raw_images honours CRYSTAL_FILENAME_PATTERN (issue 11): an archive of imager-named files is ingested
with wells and drops, and a name that does not parse is quarantined with the reason."""

import shutil

import dagster as dg

from tests.real_samples import REAL_SAMPLES
from crystal_pipeline.warehouse import Warehouse
from resources import StorageResource, build_resources


def test_raw_images_reads_the_pattern_setting(tmp_path, monkeypatch):
    import definitions

    plate = tmp_path / "raw" / "plates" / "97wo"
    plate.mkdir(parents=True)
    for drop in (1, 2, 3):
        shutil.copy(REAL_SAMPLES / f"dls_echo_97wo_01A_{drop}.jpg", plate / f"97wo_01A_{drop}.jpg")
    shutil.copy(REAL_SAMPLES / "gsk_10.jpeg", plate / "gsk_10.jpeg")
    monkeypatch.setenv("CRYSTAL_FILENAME_PATTERN", "plate_well_drop")
    result = dg.materialize([*definitions.all_assets], resources=build_resources(StorageResource(data_dir=str(tmp_path))),
                            selection=dg.AssetSelection.assets("raw_images"), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    rows = Warehouse(tmp_path / "warehouse.duckdb").query_df(
        'SELECT image_id, well, "drop", status, error FROM images ORDER BY image_id')
    ok = rows[rows["status"] == "ok"]
    assert list(zip(ok["image_id"], ok["well"], ok["drop"])) == \
        [("97wo/A01", "A01", 1), ("97wo/A01_2", "A01", 2), ("97wo/A01_3", "A01", 3)]
    [bad] = rows[rows["status"] == "quarantined"]["error"]
    assert "gsk_10" in bad and "does not match" in bad
