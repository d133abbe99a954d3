"""Tensors with a UV column (issue 20): written, read, hashed and normalized per channel."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from crystal_pipeline import tensors


def _images(n, side, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side), dtype=np.uint8)


def test_uv_column_round_trips_and_is_part_of_the_fingerprint(tmp_path):
    n, side = 7, 8
    ids, classes = [f"img{i}" for i in range(n)], [1 + i % 10 for i in range(n)]
    visible, uv = _images(n, side, 0), _images(n, side, 1)
    written = tensors.write_split(tmp_path / "uv", "train", ids, classes, visible, uv=uv, rows_per_part=3)
    plain = tensors.write_split(tmp_path / "plain", "train", ids, classes, visible, rows_per_part=3)

    split = tensors.read_split(tmp_path / "uv" / "train")
    np.testing.assert_array_equal(split.pixels, visible)
    np.testing.assert_array_equal(split.uv, uv)
    assert split.in_channels == 2 and split.channels().shape == (n, 2, side, side)
    np.testing.assert_array_equal(split.channels()[:, 1], uv)
    # the three ways of hashing agree, and the UV pictures change the fingerprint
    assert tensors.fingerprint(tmp_path / "uv" / "train") == written
    assert tensors.fingerprint_splits({"train": split}) == written
    assert written != plain

    # a visible-only split has the three columns of before, no uv, and its own hash
    plain_split = tensors.read_split(tmp_path / "plain" / "train")
    assert plain_split.uv is None and plain_split.channels() is plain_split.pixels
    part = tensors.part_files(tmp_path / "plain" / "train")[0]
    assert pq.read_schema(part).names == ["image_id", "class_id", "pixels"]
    assert not tensors.split_has_uv(tmp_path / "plain" / "train")
    assert tensors.fingerprint_splits({"train": plain_split}) == plain


def test_uv_statistics_are_the_second_channel(tmp_path):
    n, side = 5, 6
    visible, uv = _images(n, side, 2), _images(n, side, 3)
    tensors.write_split(tmp_path, "train", [str(i) for i in range(n)], [2] * n, visible, uv=uv)
    mean, std = tensors.compute_stats(tmp_path / "train")
    uv_stats = tensors.compute_stats(tmp_path / "train", uv=True)
    path = tmp_path / "stats.npz"
    tensors.save_stats(path, mean, std, uv_stats)

    one_mean, _ = tensors.load_channel_stats(path, side, 1)
    two_mean, two_std = tensors.load_channel_stats(path, side, 2)
    np.testing.assert_allclose(one_mean, visible.mean(axis=0), rtol=1e-6)
    assert two_mean.shape == (2, side, side)
    np.testing.assert_allclose(two_mean[1], uv.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(two_std[1], np.maximum(uv.std(axis=0), tensors.STD_FLOOR), rtol=1e-5)


def test_visible_only_stats_cannot_feed_a_fused_model(tmp_path):
    visible = _images(4, 6, 4)
    tensors.write_split(tmp_path, "train", list("abcd"), [1] * 4, visible)
    with pytest.raises(tensors.TensorDataError, match="UV"):
        tensors.compute_stats(tmp_path / "train", uv=True)
    mean, std = tensors.compute_stats(tmp_path / "train")
    tensors.save_stats(tmp_path / "stats.npz", mean, std)
    with pytest.raises(tensors.TensorDataError, match="UV"):
        tensors.load_channel_stats(tmp_path / "stats.npz", 6, 2)
