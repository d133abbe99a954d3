"""Reviews in consensus: a review overrides, the later file wins, incoming images become labelled."""

import os

from crystal_pipeline.ingest.annotations import read_annotations
from crystal_pipeline.ingest.consensus import ConsensusConfig
from crystal_pipeline.ingest.reviews import Vote, agree_with_reviews, is_review

FORMATS = {"P1": 96, "IN1": 96}
KNOWN = {"P1/A01", "P1/A02", "P1/A03", "P1/A04", "IN1/B01", "IN1/B02"}


def write(path, text, mtime_s=None):
    path.write_text(text)
    if mtime_s is not None:
        os.utime(path, (mtime_s, mtime_s))
    return path


def votes(table):
    return [Vote(a.image_id, a.annotator, a.attributes, a.source_file, a.source_line, a.source_mtime_ns)
            for a in table.annotations]


def labels_of(result):
    return {l.image_id: l.class_name for l in result.labels}


def test_is_review():
    assert is_review("review:ana") and is_review(" Review:Bo ") and not is_review("reviewer1")


def test_reviews_override_the_later_file_wins_and_incoming_images_become_labelled(tmp_path):
    folder = tmp_path / "annotations"
    folder.mkdir()
    experts = write(folder / "experts.csv", "plate_id,well,annotator,attributes\n"
                    "P1,A01,ann1,clear\nP1,A01,ann2,clear\n"            # agreed clear; review says crystal
                    "P1,A02,ann1,precipitate\nP1,A02,ann2,skin\n"       # disagree: no label; review labels
                    "P1,A03,ann1,skin\n"                                # reviewed twice, later file wins
                    "P1,A04,ann1,precipitate\n", 1_000)                 # not reviewed: unchanged
    # "zz_first" sorts after "aa_second" by name, but its mtime is older: mtime decides.
    first = write(folder / "zz_first.csv", "plate_id,well,inspection,annotator,attributes\n"
                  "P1,A01,,review:ana,crystal\nP1,A02,,review:ana,precipitate;crystal\n"
                  "P1,A03,,review:ana,clear\n", 2_000)
    second = write(folder / "aa_second.csv", "plate_id,well,inspection,annotator,attributes\n"
                   "P1,A03,,review:ana,phase_separation\nIN1,B01,,review:bo,crystal\n"
                   "IN1,B02,,review:bo,unsure\n", 3_000)
    table = read_annotations([experts, first, second], FORMATS, KNOWN)
    assert table.errors == []  # a re-review in a later file is not a duplicate error
    sources = {i: ("incoming" if i.startswith("IN1") else "archive") for i in KNOWN}
    result, summary = agree_with_reviews(votes(table), ConsensusConfig(), sources=sources)
    assert labels_of(result) == {"P1/A01": "crystal", "P1/A02": "precipitate_crystal", "P1/A03": "phase",
                                 "P1/A04": "precipitate", "IN1/B01": "crystal"}
    assert summary.reviewed_images == 5 and summary.review_rows == 6 and summary.superseded == 1
    assert (summary.changed_class, summary.newly_labelled, summary.newly_labelled_incoming) == (2, 2, 1)
    assert summary.unlabelled_by_review == 1 and summary.confirmed == 0
    assert summary.by_reviewer == {"review:ana": 3, "review:bo": 2}
    assert summary.changes[("clear", "crystal")] == 1 and summary.changes[("skin", "phase")] == 1
    assert summary.by_file == {"zz_first.csv": 2, "aa_second.csv": 3}
    assert "review changed the class | 2" in summary.markdown() and "| zz_first.csv | 2 |" in summary.markdown()
    # The same mtimes: the file name decides ("zz_first" is then the later file).
    os.utime(second, (2_000, 2_000))
    table = read_annotations([experts, first, second], FORMATS, KNOWN)
    result, _ = agree_with_reviews(votes(table), ConsensusConfig(), sources=sources)
    assert labels_of(result)["P1/A03"] == "clear"


def test_without_overrides_a_review_is_one_more_vote(tmp_path):
    f = write(tmp_path / "a.csv", "plate_id,well,annotator,attributes\n"
              "P1,A01,ann1,clear\nP1,A01,review:ana,crystal\nP1,A04,ann1,skin\nP1,A04,review:ana,skin\n")
    table = read_annotations([f], FORMATS, KNOWN)
    result, summary = agree_with_reviews(votes(table), ConsensusConfig(), review_overrides=False)
    assert labels_of(result) == {"P1/A04": "skin"}  # unanimous rule: clear vs crystal disagree
    assert summary.confirmed == 1 and summary.unlabelled_by_review == 1
    result, summary = agree_with_reviews(votes(table), ConsensusConfig())
    assert labels_of(result) == {"P1/A01": "crystal", "P1/A04": "skin"}
    assert summary.changed_class == 1 and summary.confirmed == 1


def test_bad_review_rows_are_errors_and_the_same_review_twice_in_one_file_is_a_duplicate(tmp_path):
    f = write(tmp_path / "review.csv", "plate_id,well,inspection,annotator,attributes\n"
              "P1,A01,,review:ana,crystal\n"
              "P9,A01,,review:ana,crystal\n"   # unknown plate
              "P1,Q77,,review:ana,crystal\n"   # unknown well
              "P1,A02,,review:ana,crystals\n"  # unknown attribute
              "P1,A01,,review:ana,clear\n")    # same reviewer, same image, same file
    table = read_annotations([f], FORMATS, KNOWN)
    assert [(a.image_id, a.attributes) for a in table.annotations] == [("P1/A01", ("crystal",))]
    reasons = [(e.source_file, e.source_line, e.reason.split(":")[0].split(" '")[0]) for e in table.errors]
    assert [r[:2] for r in reasons] == [("review.csv", 3), ("review.csv", 4), ("review.csv", 5), ("review.csv", 6)]
    assert "unknown plate" in table.errors[0].reason and "unknown well" in table.errors[1].reason
    assert "crystals" in table.errors[2].reason and "duplicate" in table.errors[3].reason
