from collections import Counter

from crystal_pipeline.ingest.consensus import ConsensusConfig, agree, plate_of, split_for


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


def test_split_is_stable_seeded_and_near_80_20():
    ids = [f"PL{p:03d}/W{i:04d}" for p in range(10) for i in range(1000)]
    first = [split_for(i) for i in ids]
    assert first == [split_for(i) for i in ids]  # a pure function of the id
    share = first.count("val") / len(first)
    assert abs(share - 0.2) < 0.01
    other_seed = [split_for(i, seed=1) for i in ids]
    assert other_seed != first and abs(other_seed.count("val") / len(ids) - 0.2) < 0.01


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
    assert {s for ss in sides.values() for s in ss} == {"train", "val"}


def test_agreement_histogram_counts_every_annotated_image():
    from crystal_pipeline.ingest.consensus import agreement_histogram

    v = (
        votes("P/A01", ["clear"], ["clear"], ["precipitate"])  # 3 annotators, 2 agree
        + votes("P/A02", ["crystal", "unsure"])  # 1 annotator: unanimous, though unlabellable
        + votes("P/A03", ["precipitate", "crystal"], ["crystal", "precipitate"])  # order is no disagreement
        + votes("P/A04", ["clear"], ["skin"])
    )
    assert agreement_histogram(v) == Counter({(3, 2): 1, (1, 1): 1, (2, 2): 1, (2, 1): 1})
