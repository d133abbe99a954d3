"""CrystalNet inference on a CPU in bf16 through oneDNN, for processors with AMX or AVX512-BF16.

On such a CPU oneDNN's bf16 direct convolution runs 5-8x the fp32 FLOP rate (issue 19:
conv2 2,087 vs 371 GFLOP/s, conv3 3,134 vs 381 on an AMX Xeon), far beyond what the fp32
Winograd path of :mod:`.fast_cpu` saves. :class:`Bf16CrystalNet` is that path's sibling:
the same standardization and contrast normalization in fp32 on the crop window only, the
same data parallelism over cores, then the four convolutions (channels_last) and the three
fully connected layers with bf16 weights and activations, bf16 products accumulated in
fp32 by oneDNN. Logits come back as fp32.

Layers named in ``keep_fp32`` stay in fp32 (for a layer where bf16 would change labels;
the agreement bench, ``bench/precision_agreement.py``, says whether one does). Which
precision a plate uses is decided by :mod:`.precision`; on a CPU without bf16 units this
class still computes the same numbers, emulated and slowly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from crystal_pipeline.model.fast_cpu import FastCrystalNet
from crystal_pipeline.model.network import CrystalNet

#: The layers of CrystalNet, in order, that this path can run in bf16.
LAYERS = ("conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "out")
#: Kept in fp32 by default: the output layer (2,048 x 10 weights, nothing to win) so that the
#: logits are not rounded to bf16's 8 significant bits right before the softmax.
DEFAULT_KEEP_FP32 = ("out",)


class Bf16CrystalNet(FastCrystalNet):
    """An inference-only CrystalNet whose convolutions and fully connected layers run in bf16."""

    precision = "bf16"

    def __init__(self, model: CrystalNet, threads: int | None = None,
                 keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32,
                 **kwargs) -> None:
        super().__init__(model, algorithms={"conv2": "direct", "conv3": "direct"}, threads=threads, **kwargs)
        keep = frozenset(keep_fp32)
        unknown = keep - set(LAYERS)
        if unknown:
            raise ValueError(f"keep_fp32: unknown layers {sorted(unknown)}; use some of {', '.join(LAYERS)}")
        self.keep_fp32 = keep

        def cast(name: str, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            dtype = torch.float32 if name in keep else torch.bfloat16
            if weight.dim() == 4:
                weight = weight.contiguous(memory_format=torch.channels_last)
            return weight.detach().to(dtype), bias.detach().to(dtype)

        convs = {"conv1": self.conv1, "conv2": self.layers["conv2"].conv, "conv3": self.layers["conv3"].conv,
                 "conv4": self.conv4}
        # (weight, bias, padding, stride, pool after) per convolution, in order.
        self.conv_layers = [(*cast(name, conv.weight, conv.bias), conv.padding, conv.stride, name != "conv4")
                            for name, conv in convs.items()]
        self.fc_layers = [cast("fc1", self.fc1_w, self.fc1_b), cast("fc2", self.fc2_w, self.fc2_b),
                          cast("out", self.out_w, self.out_b)]

    @classmethod
    def from_model(cls, model: CrystalNet, *, threads: int | None = None,  # type: ignore[override]
                   keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32, **kwargs) -> "Bf16CrystalNet":
        return cls(model, threads=threads, keep_fp32=keep_fp32, **kwargs)

    @torch.inference_mode()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Layers 0-10 as the eager model computes them; (N, features) in NHWC flatten order
        (fc1's weight was permuted to match by :class:`FastCrystalNet`)."""
        x = self.normalize_crop(images).unsqueeze(1).contiguous(memory_format=torch.channels_last)
        for weight, bias, padding, stride, pool in self.conv_layers:
            x = F.conv2d(x.to(weight.dtype), weight, bias, padding=padding, stride=stride)
            x = torch.relu_(F.max_pool2d(x, 2) if pool else x)  # relu and max-pool commute
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)

    @torch.inference_mode()
    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Layers 11-13; fp32 logits."""
        for i, (weight, bias) in enumerate(self.fc_layers):
            x = torch.addmm(bias, x.to(weight.dtype), weight.t())
            if i < len(self.fc_layers) - 1:
                x = torch.relu_(x)
        return x.float()
