"""CrystalNet (Table 1 of the paper): the network, its normalization layers and initialization.

The module takes raw 8-bit grey images (N, H, W) or (N, 1, H, W), uint8 or float
in grey levels, and does everything else itself, in Table 1's order:

    0 input -> per-pixel standardization (the paper's "Learning" section)
    1 CN: 7x7 local subtractive and divisive contrast normalization
    2 horizontal mirroring, p = 0.5            (training only)
    3 2-D similarity transform + central 7/8 crop (training; eval: crop only)
    4-10 conv5x5x64, pool, conv5x5x64, pool, conv5x5x128, pool, conv3x3x128/2
    11-13 FC 2048, FC 2048, output (logits)

``forward`` returns logits (what ``F.cross_entropy`` wants); the paper's softmax
output layer is :func:`crystal_pipeline.model.inference.softmax_probs`. Because the normalization statistics are
buffers of the module, they are saved in its state dict and travel inside the
artifact: training and inference cannot drift apart.

Decisions where the paper is ambiguous (also in docs/model_and_training.md):

* Order of normalizations. Per-pixel standardization ((x - mean) / std with the
  training set's per-pixel images) comes first, then CN. The stats the pipeline
  writes (``stats.npz``) are those of the stored 8-bit images, so they apply to
  the raw input directly; and standardizing first gives CN's divisive floor a
  fixed meaning (a fraction of the training set's pixel spread) on every image.
* CN divides by the local standard deviation, not the variance the text says.
  Dividing by the variance is not scale invariant (a brighter image gets a
  *smaller* response, defeating the stated purpose, illumination invariance) and
  explodes in flat regions. We use ``v / sqrt(var + eps)`` with ``eps = 0.1`` in
  standardized units: a floor that keeps the camera noise of a clear drop small
  instead of blowing it up into texture that looks like fine precipitate.
* The 7x7 window is a uniform box over a reflect-padded image, so the image
  border gets the same statistics as the interior.
* Padding: the 5x5 convolutions use padding 2 ("same"), conv4 (3x3, stride 2)
  none, which gives Table 1's sizes 112 -> 56 -> 28 -> 14 -> 6 and its weight
  counts exactly. Other resolutions derive the first FC input from the same rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from crystal_pipeline.classes import NUM_CLASSES
from crystal_pipeline.model import augment
from crystal_pipeline.model.inference import softmax_probs

CN_WINDOW = 7
CN_EPS = 0.1
# Where no stats are given yet: a neutral standardization for 8-bit input.
DEFAULT_PIXEL_MEAN = 128.0
DEFAULT_PIXEL_STD = 64.0
# Pixels that never vary across the training set (a masked corner) have std 0;
# dividing by less than one grey level would only amplify quantisation noise.
MIN_PIXEL_STD = 1.0


def feature_size(resolution: int) -> int:
    """Side of conv4's output map for an input resolution (6 at 128)."""
    side = augment.crop_size(resolution)
    for _ in range(3):  # the three 2x2 max pools after 'same' 5x5 convolutions
        side //= 2
    side = (side - 3) // 2 + 1  # conv4: 3x3, stride 2, no padding
    if side < 1:
        raise ValueError(f"resolution {resolution} is too small for CrystalNet (minimum 32)")
    return side


def contrast_normalize(x: torch.Tensor, window: int = CN_WINDOW, eps: float = CN_EPS) -> torch.Tensor:
    """Local subtractive then divisive normalization over a window x window box.

    ``v = x - boxmean(x)``; ``y = v / sqrt(boxmean(v^2) + eps)``. The result is
    locally zero-mean and, where local contrast is well above ``sqrt(eps)``,
    locally unit-scale, and invariant to a local affine change of brightness.
    """
    pad = window // 2

    def box_mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), window, stride=1)

    v = x - box_mean(x)
    return v / torch.sqrt(box_mean(v * v) + eps)


class CrystalNet(nn.Module):
    """The 13-layer CrystalNet; see the module docstring for the decisions.

    ``augment_params=None`` disables layers 2-3's randomness in training too
    (useful for overfitting tests); eval mode always uses the central crop.
    ``in_channels=2`` is the fused visible + UV variant (issue 20: early fusion, the two
    pictures of a drop stacked as channels of one image, normalized per channel, warped
    together); 1, the paper's, reads (N, res, res) grey images as before.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        resolution: int = 128,
        *,
        augment_params: augment.AugmentParams | None = augment.AugmentParams(),
        cn_eps: float = CN_EPS,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.resolution = resolution
        self.crop = augment.crop_size(resolution)
        self.augment_params = augment_params
        self.cn_eps = cn_eps
        # Set by whoever moves the weights to channels_last (training on CUDA, load()).
        self.channels_last = False
        shape = (1, in_channels, resolution, resolution)
        self.register_buffer("pixel_mean", torch.full(shape, DEFAULT_PIXEL_MEAN))
        self.register_buffer("pixel_std", torch.full(shape, DEFAULT_PIXEL_STD))
        self.conv1 = nn.Conv2d(in_channels, 64, 5, padding=2)
        self.conv2 = nn.Conv2d(64, 64, 5, padding=2)
        self.conv3 = nn.Conv2d(64, 128, 5, padding=2)
        self.conv4 = nn.Conv2d(128, 128, 3, stride=2)
        side = feature_size(resolution)
        self.fc1 = nn.Linear(128 * side * side, 2048)
        self.fc2 = nn.Linear(2048, 2048)
        self.out = nn.Linear(2048, num_classes)
        init_weights(self, "kaiming")

    # -- normalization -------------------------------------------------------
    def set_normalization(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        """Install the training set's per-pixel mean and std images (res x res; channels x res
        x res for a model of several input channels)."""
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        std_t = torch.as_tensor(np.asarray(std, dtype=np.float32))
        expected = (self.resolution, self.resolution)
        if self.in_channels > 1:
            expected = (self.in_channels, *expected)
        if tuple(mean_t.shape) != expected or tuple(std_t.shape) != expected:
            raise ValueError(
                f"normalization stats must be {expected} images, got mean {tuple(mean_t.shape)}"
                f" and std {tuple(std_t.shape)}"
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all()):
            raise ValueError("normalization stats contain NaN or infinity")
        with torch.no_grad():
            self.pixel_mean.copy_(mean_t.view_as(self.pixel_mean))
            self.pixel_std.copy_(std_t.clamp_min(MIN_PIXEL_STD).view_as(self.pixel_std))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Layers 0-1: grey levels -> standardized -> contrast normalized (float32)."""
        if images.dim() == 3 and self.in_channels == 1:
            images = images.unsqueeze(1)
        if (images.dim() != 4 or images.shape[-2:] != (self.resolution, self.resolution)
                or images.shape[1] != self.in_channels):
            shape = (f"(N, {self.resolution}, {self.resolution}) grey images" if self.in_channels == 1 else
                     f"(N, {self.in_channels}, {self.resolution}, {self.resolution}) images")
            raise ValueError(f"CrystalNet({self.resolution}) expects {shape}, got {tuple(images.shape)}")
        x = (images.float() - self.pixel_mean) / self.pixel_std
        return contrast_normalize(x, CN_WINDOW, self.cn_eps)

    # -- forward ---------------------------------------------------------------
    def forward(self, images: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, num_classes).

        In training mode with augmentation on, ``theta`` (N, 2, 3) from
        :func:`crystal_pipeline.model.augment.random_theta` selects the mirror and
        similarity transform of each image; the training loop draws it from its
        own seeded generator so runs repeat. Without ``theta`` one is drawn from
        torch's global generator. Eval mode ignores ``theta``: central crop only.
        """
        x = self.normalize(images)
        if self.training and self.augment_params is not None:
            if theta is None:
                theta = augment.random_theta(x.shape[0], self.resolution, self.augment_params, device=x.device)
            x = augment.warp(x, theta, self.crop)
        else:
            x = augment.center_crop(x, self.crop)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = F.relu(self.conv4(x))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.out(x)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """The paper's softmax output layer on one batch, in the module's current mode and
        on its device (for many images in eval mode use :func:`~crystal_pipeline.model.predict_proba`)."""
        return softmax_probs(self.forward(images))

    def config(self) -> dict[str, Any]:
        """What :func:`build_model` needs to rebuild this module."""
        params = self.augment_params
        config = {
            "num_classes": self.num_classes,
            "resolution": self.resolution,
            "cn_eps": self.cn_eps,
            "augment": None if params is None else dataclasses.asdict(params),
        }
        if self.in_channels != 1:  # a visible-only model's config is what it was before UV
            config["in_channels"] = self.in_channels
        return config


def build_model(config: dict[str, Any]) -> CrystalNet:
    aug = config.get("augment")
    return CrystalNet(
        num_classes=int(config["num_classes"]),
        resolution=int(config["resolution"]),
        augment_params=None if aug is None else augment.AugmentParams(**aug),
        cn_eps=float(config.get("cn_eps", CN_EPS)),
        in_channels=int(config.get("in_channels", 1)),
    )


def weight_counts(model: CrystalNet) -> dict[str, int]:
    """Weights per layer, biases aside, in Table 1's order (its '# Weights' column)."""
    layers = ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "out")
    return {name: getattr(model, name).weight.numel() for name in layers}


def init_weights(model: CrystalNet, scheme: str = "kaiming") -> None:
    """Initialize weights; biases start at zero in both schemes.

    ``paper``: every weight ~ N(0, 0.01), as the paper says. With ReLU and seven
    weight layers this shrinks the signal by roughly 10^4 before the output, so
    gradients reach the early layers as ~nothing (measured in
    docs/model_and_training.md). ``kaiming`` (He et al. 2015, fan-in, ReLU gain)
    keeps the activation scale constant through the hidden layers; the output
    layer still starts at N(0, 0.01) so the initial loss is ln(10).
    """
    if scheme not in ("kaiming", "paper"):
        raise ValueError(f"unknown init {scheme!r}: use 'kaiming' or 'paper'")
    hidden = (model.conv1, model.conv2, model.conv3, model.conv4, model.fc1, model.fc2)
    with torch.no_grad():
        for layer in (*hidden, model.out):
            if scheme == "paper" or layer is model.out:
                nn.init.normal_(layer.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
