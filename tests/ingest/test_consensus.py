from collections import Counter

from crystal_pipeline.ingest.consensus import ConsensusConfig, agree
from crystal_pipeline.ingest.splits import plate_of, well_key


def votes(image_id, *sets):
    return [(image_id, tuple(s)) for s in sets]


def test_unanimous_default_counts_every_exclusion():
    v = (
        votes("P/A01", ["clear"], ["clear"])
        + votes("P/A02", ["crystal"], ["precipitate", "crystal"])
        + votes("P/A03", ["crystal", "unsure"])
        + votes("P/A04", ["skin", "crystal"])
        + votes("P/A05", ["precipitate", "crystal"])
    )
    result = agree(v)
    assert [(l.image_id, l.class_id, l.agreement) for l in result.labels] == [("P/A01", 1, 1.0), ("P/A05", 5, 1.0)]
    assert result.labels[1].has_crystal and not result.labels[0].has_crystal
    assert result.excluded == Counter({"annotators disagree": 1, "unsure": 1, "attribute set has no class": 1})
    assert result.unmapped_sets == Counter({"crystal;skin": 1})


def test_majority_rule_with_minimums_and_ties():
    v = (
        votes("P/A01", ["clear"], ["clear"], ["precipitate"])
        + votes("P/A02", ["clear"], ["precipitate"])
        + votes("P/A03", ["crystal"])
        + votes("P/A04", ["crystal"], ["crystal"], ["phase_separation"], ["clear"])
    )
    result = agree(v, ConsensusConfig(rule="majority", min_agreement=0.6, min_annotators=2))
    labels = {l.image_id: (l.class_id, round(l.agreement, 3)) for l in result.labels}
    assert labels == {"P/A01": (1, 0.667)}
    assert result.excluded["tie between classes"] == 1
    assert result.excluded["fewer than 2 annotators"] == 1
    assert result.excluded["agreement below 0.6"] == 1


def test_quarantined_images_get_no_label():
    result = agree(votes("P/A01", ["clear"]) + votes("P/A02", ["clear"]),
                   image_status={"P/A01": "ok", "P/A02": "quarantined"})
    assert [l.image_id for l in result.labels] == ["P/A01"]
    assert result.excluded["image quarantined"] == 1


def test_split_is_by_well_stable_seeded_and_near_70_10_20():
    v = [(f"PL{p:03d}@d{d}/{r}{c:02d}", ("clear",)) for p in range(30) for d in (1, 7) for r in "ABCDEFGH"
         for c in range(1, 13)]
    first = {l.image_id: l.split for l in agree(v).labels}
    assert first == {l.image_id: l.split for l in agree(v).labels}  # a pure function of the ids
    by_well: dict[str, set] = {}
    for image_id, side in first.items():
        by_well.setdefault(well_key(image_id), set()).add(side)
    assert all(len(s) == 1 for s in by_well.values())  # both inspections of a well on one side
    shares = Counter(first.values())
    for side, target in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(shares[side] / len(first) - target) < 0.04, shares
    other_seed = {l.image_id: l.split for l in agree(v, ConsensusConfig(seed=1)).labels}
    assert other_seed != first
    fifty = Counter(l.split for l in agree(v, ConsensusConfig(train_fraction=0.5, val_fraction=0.0,
                                                              test_fraction=0.5)).labels)
    assert set(fifty) == {"train", "test"}


def test_identical_files_share_a_side_whatever_their_wells():
    v = [(f"P{p}/{r}{c:02d}", ("clear",)) for p in range(4) for r in "ABCDEFGH" for c in range(1, 13)]
    plain = {l.image_id: l.split for l in agree(v).labels}
    a, b = next((a, b) for a in plain for b in plain if plain[a] != plain[b])
    merged = {l.image_id: l.split for l in agree(v, hashes={a: "same", b: "same"}).labels}
    assert merged[a] == merged[b]


def test_unknown_split_mode_or_fractions_are_refused():
    import pytest

    with pytest.raises(ValueError):
        agree(votes("P/A01", ["clear"]), ConsensusConfig(split_by="drop"))
    with pytest.raises(ValueError):
        agree(votes("P/A01", ["clear"]), ConsensusConfig(val_fraction=0.3))


def test_new_plate_never_moves_old_images():
    old = votes("A/A01", ["clear"]) + votes("A/A02", ["precipitate"]) + votes("B/A01", ["crystal"])
    before = {l.image_id: l.split for l in agree(old).labels}
    after = {l.image_id: l.split for l in agree(old + votes("C/A01", ["clear"])).labels}
    assert all(after[k] == v for k, v in before.items())


def test_split_by_plate_keeps_each_plate_on_one_side():
    v = [(f"P{p}@{d}/A{w:02d}", ("clear",)) for p in range(40) for d in ("d1", "d7") for w in range(1, 13)]
    result = agree(v, ConsensusConfig(split_by="plate"))
    sides: dict[str, set] = {}
    for label in result.labels:
        sides.setdefault(plate_of(label.image_id), set()).add(label.split)
    assert all(len(s) == 1 for s in sides.values())
    assert {s for ss in sides.values() for s in ss} == {"train", "val", "test"}


def test_agreement_histogram_counts_every_annotated_image():
    from crystal_pipeline.ingest.consensus import agreement_histogram

    v = (
        votes("P/A01", ["clear"], ["clear"], ["precipitate"])  # 3 annotators, 2 agree
        + votes("P/A02", ["crystal", "unsure"])  # 1 annotator: unanimous, though unlabellable
        + votes("P/A03", ["precipitate", "crystal"], ["crystal", "precipitate"])  # order is no disagreement
        + votes("P/A04", ["clear"], ["skin"])
    )
    assert agreement_histogram(v) == Counter({(3, 2): 1, (1, 1): 1, (2, 2): 1, (2, 1): 1})
