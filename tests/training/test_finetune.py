"""Fine-tuning: a warm start begins at the parent's weights and normalization, records the
parent, and with freeze_features leaves the convolutions exactly as the parent had them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystal_pipeline.model import load, load_artifact
from crystal_pipeline.training import TrainConfig, train
from crystal_pipeline.training import warm_start
from crystal_pipeline.training.distributed import DistInfo
from crystal_pipeline.training.launch import torchrun_command
from crystal_pipeline.training.loop import build_session, load_data

from tests.training.test_training import write_toy_tensors

SMOKE = {"num_threads": 2}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A parent trained on one toy lab, and another lab's tensors (other images, other stats)."""
    root = tmp_path_factory.mktemp("finetune")
    write_toy_tensors(root / "lab_a", seed=0)
    write_toy_tensors(root / "lab_b", n_train=64, n_val=32, seed=5)
    parent_path = root / "parent.pt"
    result = train(TrainConfig.from_preset("smoke", SMOKE), root / "lab_a", parent_path, trained_on="synthetic")
    assert result.finished
    return root, parent_path


def _finetune_config(**changes):
    return TrainConfig.from_preset("smoke", {**SMOKE, "init_from": "v-parent", **changes})


def test_warm_start_begins_at_the_parent_with_its_normalization(lab):
    root, parent_path = lab
    config = _finetune_config()
    parent = warm_start.load_parent(parent_path, config)
    data = load_data(root / "lab_b", config.resolution, with_fingerprint=False)
    own_mean = data.mean.copy()
    data.mean, data.std = parent.mean, parent.std  # what train() does for a warm start
    session, _ = build_session(config, data, torch.device("cpu"), DistInfo(), None, parent)
    parent_state = load_artifact(parent_path)["state_dict"]
    for name, tensor in session.model.state_dict().items():
        assert torch.equal(tensor, parent_state[name]), name  # before the first update
    assert not np.allclose(own_mean, parent.mean)  # lab B's own stats were not used
    # From scratch the same seed draws other weights: the equality above is the warm start's doing.
    scratch, _ = build_session(TrainConfig.from_preset("smoke", SMOKE), data, torch.device("cpu"), DistInfo(), None)
    assert not torch.equal(scratch.model.fc1.weight, parent_state["fc1.weight"])


def test_frozen_finetune_records_its_parent_and_keeps_the_convolutions(lab):
    root, parent_path = lab
    out = root / "child.pt"
    config = _finetune_config(freeze_features="true")
    result = train(config, root / "lab_b", out, trained_on="synthetic", init_artifact=parent_path)
    assert result.finished and result.updates == config.updates
    child, parent = load(out, "cpu"), load(parent_path, "cpu")
    meta = child.artifact_meta
    assert meta["parent_version"] == "v-parent" and meta["n_train_labels"] == 64
    assert meta["config"]["init_from"] == "v-parent" and meta["config"]["freeze_features"] is True
    for layer in warm_start.FEATURE_LAYERS:
        assert torch.equal(getattr(child, layer).weight, getattr(parent, layer).weight), layer
        assert torch.equal(getattr(child, layer).bias, getattr(parent, layer).bias), layer
    assert not torch.equal(child.fc1.weight, parent.fc1.weight)  # the classifier learnt
    assert torch.equal(child.pixel_mean, parent.pixel_mean)  # the parent's normalization kept
    scratch_meta = parent.artifact_meta
    assert scratch_meta["parent_version"] is None and scratch_meta["n_train_labels"] == 96


def test_parent_is_part_of_the_identity_and_must_come_with_its_file(lab, tmp_path):
    _, parent_path = lab
    scratch = TrainConfig.from_preset("smoke", SMOKE)
    assert len({scratch.identity_key(), _finetune_config().identity_key(),
                _finetune_config(init_from="v-other").identity_key()}) == 3
    with pytest.raises(ValueError, match="needs the parent's artifact file"):
        train(_finetune_config(), tmp_path, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="needs init_from"):
        train(scratch, tmp_path, tmp_path / "m.pt", init_artifact=parent_path)
    with pytest.raises(ValueError, match="freeze_features needs init_from"):
        TrainConfig.from_preset("finetune", {"freeze_features": "true"})
    with pytest.raises(ValueError, match="resolution: parent 32, this run 64"):
        warm_start.load_parent(parent_path, TrainConfig.from_preset("finetune", {"init_from": "v-parent"}))
    command = torchrun_command(tensors_dir="t", out_path="o.pt", result_path="r.npz", preset="finetune",
                               overrides={"init_from": "v-parent"}, init_artifact=parent_path)
    assert command[command.index("--init-artifact") + 1] == str(parent_path)
    assert "init_from=v-parent" in command
    finetune = TrainConfig.from_preset("finetune")
    demo = TrainConfig.from_preset("demo")
    assert finetune.updates < demo.updates and finetune.lr < demo.lr and finetune.resolution == demo.resolution
