"""Baselines: deterministic fixed-shape features, the Parquet cache, and each model end to end."""

from __future__ import annotations

import numpy as np
import pytest

from crystal_pipeline.baselines import (
    FEATURE_NAMES,
    NEAREST_NEIGHBOR,
    NEURAL_NET,
    NUM_FEATURES,
    RF,
    extract_features,
    extract_features_cached,
    fit_baselines,
    full_probabilities,
    image_features,
    model_scores,
    pixels_for_knn,
    predict_proba_baselines,
    table5_markdown,
    baselines_for_metrics,
)
from crystal_pipeline.baselines import feature_cache
from crystal_pipeline import tensors
from crystal_pipeline.tensors import fingerprint
from crystal_pipeline.evaluation.uncertainty import mcnemar
from sklearn import metrics as skm


def pattern_images(n: int, side: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three easy patterns: smooth and bright (class 1), granular speckle on mid grey (2),
    bright line segments on darker grey (3). Texture separates them for the feature models,
    brightness for pixel kNN (textures at random positions do not match pixel by pixel)."""
    rng = np.random.default_rng(seed)
    y = np.array([1, 2, 3] * (n // 3 + 1))[:n]
    yy, xx = np.mgrid[:side, :side] / side
    images = np.empty((n, side, side), dtype=np.uint8)
    for i, label in enumerate(y):
        level = {1: 180, 2: 130, 3: 80}[int(label)]
        base = level + 20 * rng.random() + 20 * (xx * rng.random() + yy * rng.random())
        img = base + rng.normal(0, 3, (side, side))
        if label == 2:
            spots = rng.random((side, side)) < 0.15
            img[spots] -= 70
        elif label == 3:
            for _ in range(4):
                r0, c0 = rng.integers(8, side - 8, 2)
                angle = rng.random() * np.pi
                t = np.linspace(-side / 5, side / 5, 4 * side)
                r = np.clip((r0 + t * np.sin(angle)).astype(int), 0, side - 1)
                c = np.clip((c0 + t * np.cos(angle)).astype(int), 0, side - 1)
                img[r, c] = 250
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, y


def write_split(split_dir, images: np.ndarray, y: np.ndarray) -> None:
    """The split through the pipeline's tensor writer."""
    tensors.write_split(split_dir.parent, split_dir.name, [f"p/{i:04d}" for i in range(len(images))], y, images)


def test_features_are_deterministic_with_fixed_shape_at_any_resolution():
    images, _ = pattern_images(6, side=64)
    first = extract_features(images)
    assert first.shape == (6, NUM_FEATURES) and first.dtype == np.float32
    assert len(FEATURE_NAMES) == NUM_FEATURES == len(set(FEATURE_NAMES))
    np.testing.assert_array_equal(first, extract_features(images))
    assert np.isfinite(first).all()
    # Same F at other resolutions, and for a constant image (no edges, no texture).
    big = np.kron(images[:2], np.ones((2, 2), np.uint8))
    assert extract_features(big).shape == (2, NUM_FEATURES)
    assert image_features(np.zeros((48, 48), np.uint8)).shape == (NUM_FEATURES,)
    assert np.isfinite(image_features(np.full((32, 32), 200, np.uint8))).all()
    # Families differ between textures: the features carry signal.
    assert not np.allclose(first[0], first[1])


def test_parallel_extraction_equals_serial():
    images, _ = pattern_images(9, side=64, seed=2)
    np.testing.assert_array_equal(extract_features(images, workers=2, chunk_size=4),
                                  extract_features(images, workers=1))


def test_feature_cache_second_call_reads_parquet(tmp_path, monkeypatch):
    images, y = pattern_images(12, side=64, seed=4)
    split = tmp_path / "tensors" / "r64" / "train"
    write_split(split, images, y)
    fp = fingerprint(split)

    first = extract_features_cached(split, tmp_path / "cache", fp, workers=1)
    assert not first.from_cache and first.path.exists()
    assert first.features.shape == (12, NUM_FEATURES)
    assert first.seconds > 0

    def boom(*args, **kwargs):
        raise AssertionError("extraction ran although the cache holds these tensors")

    monkeypatch.setattr(feature_cache, "extract_features", boom)
    second = extract_features_cached(split, tmp_path / "cache", fp, workers=1)
    assert second.from_cache
    np.testing.assert_array_equal(second.features, first.features)
    assert second.image_ids == first.image_ids
    np.testing.assert_array_equal(second.class_ids, y)
    assert second.seconds == pytest.approx(first.seconds, rel=1e-3)
    # Without a fingerprint it is computed, and hits the same file.
    assert extract_features_cached(split, tmp_path / "cache", None).from_cache


def test_damaged_cache_is_recomputed(tmp_path):
    images, y = pattern_images(6, side=64, seed=5)
    split = tmp_path / "val"
    write_split(split, images, y)
    path = feature_cache.cache_path(tmp_path / "cache", fingerprint(split), "val")
    path.parent.mkdir()
    path.write_bytes(b"not parquet")
    table = extract_features_cached(split, tmp_path / "cache", None)
    assert not table.from_cache
    assert extract_features_cached(split, tmp_path / "cache", None).from_cache


def test_full_probabilities_places_absent_classes():
    class Fitted:
        classes_ = np.array([2, 5, 9])

    probs = full_probabilities(Fitted(), np.array([[0.2, 0.5, 0.3]]))
    assert probs.shape == (1, 10)
    np.testing.assert_allclose(probs[0, [1, 4, 8]], [0.2, 0.5, 0.3])
    assert probs.sum() == pytest.approx(1.0)


def test_pixels_for_knn_downsamples_by_block_mean():
    images = np.arange(2 * 64 * 64, dtype=np.uint8).reshape(2, 64, 64) % 7
    flat = pixels_for_knn(images, side=32)
    assert flat.shape == (2, 1024)
    assert flat[0, 0] == pytest.approx(images[0, :2, :2].mean())
    assert pixels_for_knn(images[:, :48, :48], side=32).shape == (2, 1024)


def test_each_baseline_beats_chance_on_three_easy_patterns():
    train_images, y_train = pattern_images(60, seed=10)
    val_images, y_val = pattern_images(30, seed=11)
    train_features = extract_features(train_images)
    val_features = extract_features(val_images)

    models = fit_baselines(train_features, train_images, y_train, seed=0, workers=1)
    assert set(models) == {RF, NEURAL_NET, NEAREST_NEIGHBOR}
    predictions = predict_proba_baselines(models, val_features, val_images)
    accuracy = {}
    for name, prediction in predictions.items():
        assert prediction.probs.shape == (30, 10)
        np.testing.assert_allclose(prediction.probs.sum(axis=1), 1.0, atol=1e-6)
        assert (prediction.probs[:, 3:] == 0).all()  # classes never trained on get 0
        assert 0 < prediction.seconds < 60, (name, prediction.seconds)  # measured, not a default 0
        accuracy[name] = float((prediction.probs.argmax(axis=1) + 1 == y_val).mean())
    assert accuracy[RF] >= 0.8, accuracy  # chance is 1/3
    assert accuracy[NEURAL_NET] >= 0.8, accuracy
    assert accuracy[NEAREST_NEIGHBOR] >= 0.8, accuracy

    # Seeded: refitting gives the same probabilities.
    again = predict_proba_baselines(fit_baselines(train_features, train_images, y_train, seed=0,
                                                  names=(RF,)), val_features, val_images)
    np.testing.assert_array_equal(again[RF].probs, predictions[RF].probs)

    probs = {name: p.probs for name, p in predictions.items()}
    # A CrystalNet that is wrong on exactly the first three images (answers the next pattern).
    predicted = y_val.copy()
    predicted[:3] = y_val[:3] % 3 + 1
    probs["CrystalNet"] = np.eye(10)[predicted - 1]
    seconds = {name: p.seconds for name, p in predictions.items()} | {"CrystalNet": 0.5}
    scores = model_scores(y_val, probs, seconds, feature_seconds={RF: 1.0, NEURAL_NET: 1.0})
    by_name = {s["name"]: s for s in scores}
    assert by_name["CrystalNet"]["accuracy"] == pytest.approx(27 / 30)
    assert by_name[RF]["accuracy"] == pytest.approx(accuracy[RF])
    assert by_name["CrystalNet"]["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(y_val, predicted))
    assert by_name["CrystalNet"]["mcnemar_p_vs_crystalnet"] is None
    for name in (RF, NEURAL_NET, NEAREST_NEIGHBOR):
        right = probs[name].argmax(axis=1) + 1 == y_val
        expected = mcnemar(predicted == y_val, right)
        assert by_name[name]["mcnemar_p_vs_crystalnet"] == pytest.approx(expected.p_value)
        assert by_name[name]["only_crystalnet_right"] == expected.only_a_right
        low, high = by_name[name]["accuracy_ci95"]
        assert low <= by_name[name]["accuracy"] <= high
    assert set(baselines_for_metrics(scores)) == {RF, NEURAL_NET, NEAREST_NEIGHBOR}
    table = table5_markdown(scores, "three toy patterns", split="test")
    assert "test split, 30 images" in table and "McNemar" in table
    for needle in ("| CrystalNet | 90.8 | 300 | 90.0 [", "| RF | 82.8 | 209 |",
                   "| Neural Net | 86.9 | 1 |", "| Nearest Neighbor | 70.7 | 286 |",
                   "three toy patterns", "HWI"):
        assert needle in table, needle
