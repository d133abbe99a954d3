"""Class-balanced training: the weights, the seeded balanced batches, the weighted loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crystal_pipeline.training import TrainConfig, balance
from crystal_pipeline.training.steps import BatchPlan, train_step


def _targets(counts: dict[int, int]) -> np.ndarray:
    return np.concatenate([np.full(n, c, dtype=np.int64) for c, n in counts.items()])


def test_full_power_gives_every_present_class_the_same_total_weight():
    targets = _targets({0: 900, 1: 90, 2: 10})
    w = balance.class_weights(targets, 1.0)
    totals = w[:3] * np.array([900, 90, 10])
    assert np.allclose(totals, totals[0])
    assert w[3:].sum() == 0  # absent classes
    assert np.isclose(w[targets].mean(), 1.0)  # the learning rate keeps its meaning


def test_power_zero_is_the_plain_loss():
    targets = _targets({0: 50, 4: 5})
    w = balance.class_weights(targets, 0.0)
    assert np.allclose(w[[0, 4]], 1.0)


def test_square_root_weights_sit_between_plain_and_balanced():
    targets = _targets({0: 400, 1: 100})
    half = balance.class_weights(targets, 0.5)
    assert half[1] / half[0] == pytest.approx(2.0)  # sqrt(400 / 100)


def test_balanced_sampling_draws_rare_classes_at_the_requested_share_and_repeats_per_update():
    targets = _targets({0: 950, 1: 50})
    config = TrainConfig.from_preset("smoke", {"class_balance": "sampling", "balance_power": 1.0, "batch_size": 64})
    plan = BatchPlan(len(targets), config, torch.device("cpu"), targets=targets)
    drawn = torch.cat([plan.indices(u) for u in range(200)]).numpy()
    share_rare = float((targets[drawn] == 1).mean())
    assert 0.45 < share_rare < 0.55  # uniform drawing would give 0.05
    again = BatchPlan(len(targets), config, torch.device("cpu"), targets=targets)
    assert torch.equal(plan.indices(137), again.indices(137))  # stateless: resume-safe
    ranks = [BatchPlan(len(targets), config, torch.device("cpu"), rank=r, world=2, targets=targets) for r in (0, 1)]
    both = torch.cat([ranks[0].indices(5), ranks[1].indices(5)]).sort().values
    assert torch.equal(both, plan.indices(5).sort().values)  # DDP ranks split the same global batch


def test_sampling_without_targets_is_refused():
    config = TrainConfig.from_preset("smoke", {"class_balance": "sampling"})
    with pytest.raises(ValueError, match="targets"):
        BatchPlan(100, config, torch.device("cpu"))


def test_weighted_loss_is_what_train_step_optimises():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 10)
    images, targets = torch.randn(8, 4), torch.tensor([0, 0, 0, 0, 0, 0, 1, 2])
    weight = balance.loss_weights("loss", targets.numpy(), 1.0, torch.device("cpu"))
    expected = F.cross_entropy(net(images), targets, weight=weight)
    plain = F.cross_entropy(net(images), targets)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    loss, _ = train_step(lambda x, theta: net(x), opt, images, targets, None, torch.autocast("cpu", enabled=False),
                         weight)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert abs(loss.item() - plain.item()) > 1e-3
    assert balance.loss_weights("none", targets.numpy(), 1.0, torch.device("cpu")) is None


def test_config_rejects_unknown_balance_settings():
    with pytest.raises(ValueError, match="class_balance"):
        TrainConfig.from_preset("smoke", {"class_balance": "oversample"})
    with pytest.raises(ValueError, match="balance_power"):
        TrainConfig.from_preset("smoke", {"balance_power": 2})
