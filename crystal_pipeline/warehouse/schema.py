"""The warehouse's tables: one DDL statement each, created if missing.

These are public interfaces (DESIGN.md names every column); a change here is a
schema migration, not a refactor: a column added later comes with an
``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` after its table, so existing warehouses keep working. Every statement that reads or writes them lives in
this package (``images``, ``annotations``, ``labels``, ``models``, ``predictions``).
"""

from __future__ import annotations

def _marco_sql() -> str:
    """SQL for classes.marco_outcome over the FLOAT[10] ``probs`` (1-based), from classes.MARCO_OF_CLASS."""
    from crystal_pipeline.classes import MARCO_CLASSES, MARCO_OF_CLASS

    sums = {m: "(" + " + ".join(f"probs[{c}]" for c, mm in MARCO_OF_CLASS.items() if mm == m) + ")"
            for m in MARCO_CLASSES}
    cases = []
    for i, name in enumerate(MARCO_CLASSES[:-1]):  # first maximum wins, as numpy's argmax
        beats = " AND ".join(f"{sums[name]} >= {sums[other]}" for other in MARCO_CLASSES[i + 1:])
        cases.append(f"WHEN {beats} THEN '{name}'")
    return f"CASE {' '.join(cases)} ELSE '{MARCO_CLASSES[-1]}' END"


MARCO_CLASS_SQL = _marco_sql()

SCHEMA: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS images (
        image_id VARCHAR PRIMARY KEY,
        plate_id VARCHAR NOT NULL,
        inspection VARCHAR,
        plate_format INTEGER,
        well VARCHAR,
        well_index INTEGER,
        "row" INTEGER,
        col INTEGER,
        path VARCHAR NOT NULL,
        sha256 VARCHAR,
        width INTEGER,
        height INTEGER,
        mode VARCHAR,
        status VARCHAR NOT NULL,
        error VARCHAR,
        source VARCHAR NOT NULL,
        file_size BIGINT,
        file_mtime_ns BIGINT,
        ingested_at TIMESTAMP NOT NULL,
        "drop" INTEGER DEFAULT 1,
        plate_drops INTEGER DEFAULT 1,
        imaging VARCHAR DEFAULT 'visible'
    )
    """,
    # Migration (issue 11): a well may hold several drops. Warehouses from before gain the
    # columns with 1 in every existing row (one drop per well, as the archive was read);
    # image ids of drop 1 are unchanged, so nothing else moves.
    'ALTER TABLE images ADD COLUMN IF NOT EXISTS "drop" INTEGER DEFAULT 1',
    "ALTER TABLE images ADD COLUMN IF NOT EXISTS plate_drops INTEGER DEFAULT 1",
    # Migration (issue 20): a drop may have a UV picture beside its visible one (``imaging`` 'uv',
    # image id ``<visible id>.uv``). Rows from before are all white-light pictures: 'visible'.
    "ALTER TABLE images ADD COLUMN IF NOT EXISTS imaging VARCHAR DEFAULT 'visible'",
    """
    CREATE TABLE IF NOT EXISTS annotations (
        image_id VARCHAR NOT NULL,
        annotator VARCHAR NOT NULL,
        attributes VARCHAR[] NOT NULL,
        source_file VARCHAR NOT NULL,
        source_line INTEGER NOT NULL,
        source_mtime_ns BIGINT
    )
    """,
    # Migration (issue 10): the file's mtime orders two reviews of one image (the later file
    # wins); rows from before have NULL, which sorts first.
    "ALTER TABLE annotations ADD COLUMN IF NOT EXISTS source_mtime_ns BIGINT",
    """
    CREATE TABLE IF NOT EXISTS annotation_errors (
        source_file VARCHAR NOT NULL,
        source_line INTEGER,
        reason VARCHAR NOT NULL,
        raw VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS consensus_labels (
        image_id VARCHAR PRIMARY KEY,
        class_id INTEGER NOT NULL,
        class_name VARCHAR NOT NULL,
        has_crystal BOOLEAN NOT NULL,
        n_annotators INTEGER NOT NULL,
        agreement DOUBLE NOT NULL,
        split VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS models (
        model_version VARCHAR PRIMARY KEY,
        created_at TIMESTAMP NOT NULL,
        preset VARCHAR,
        resolution INTEGER,
        path VARCHAR NOT NULL,
        sha256 VARCHAR,
        trained_on VARCHAR,
        val_accuracy DOUBLE,
        crystal_recall DOUBLE,
        crystal_auc DOUBLE,
        crystal_threshold DOUBLE,
        is_production BOOLEAN NOT NULL DEFAULT FALSE,
        temperature DOUBLE,
        in_channels INTEGER
    )
    """,
    # Migration (issue 9): warehouses created before calibration gain the column; NULL
    # there means T = 1. Runs on every start and does nothing once the column exists.
    "ALTER TABLE models ADD COLUMN IF NOT EXISTS temperature DOUBLE",
    # Migration (issue 10): fine-tuning. parent_version is the model a fine-tune started
    # from (NULL from scratch, and for every model registered before); n_train_labels the
    # labelled images it trained on (NULL for models registered before).
    "ALTER TABLE models ADD COLUMN IF NOT EXISTS parent_version VARCHAR",
    "ALTER TABLE models ADD COLUMN IF NOT EXISTS n_train_labels INTEGER",
    # Migration (issue 20 item 3): the pictures a model reads, 1 (visible) or 2 (visible + UV,
    # ``model.fusion``); one production model per count. No default: a row from before the column
    # is NULL ("not recorded"), and ``evaluation.registry.record_input_channels`` fills it from the
    # model file, since fused models were registered before the column existed.
    "ALTER TABLE models ADD COLUMN IF NOT EXISTS in_channels INTEGER",
    """
    CREATE TABLE IF NOT EXISTS predictions (
        image_id VARCHAR NOT NULL,
        plate_id VARCHAR NOT NULL,
        inspection VARCHAR,
        well VARCHAR,
        model_version VARCHAR NOT NULL,
        class_id INTEGER NOT NULL,
        class_name VARCHAR NOT NULL,
        crystal_prob DOUBLE NOT NULL,
        probs FLOAT[10] NOT NULL,
        predicted_at TIMESTAMP NOT NULL,
        marco_class VARCHAR
    )
    """,
    # Migration (issue 11): MARCO's four-class outcome (classes.marco_outcome: the arg-max of the
    # four sums of probs, ties to the earlier of crystals, precipitate, clear, other). Older rows
    # are filled from their stored probs; once none is NULL the UPDATE touches nothing.
    "ALTER TABLE predictions ADD COLUMN IF NOT EXISTS marco_class VARCHAR",
    f"UPDATE predictions SET marco_class = {MARCO_CLASS_SQL} WHERE marco_class IS NULL",
)

TABLES: tuple[str, ...] = ("images", "annotations", "annotation_errors", "consensus_labels", "models", "predictions")
