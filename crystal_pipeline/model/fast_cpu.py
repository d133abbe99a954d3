"""CrystalNet inference on a CPU with fewer multiplications and no wasted work.

A plate is 1,536 images; on a small CPU the eager model spends most of its time in
conv2 and conv3 (the 5x5 layers, 92% of the arithmetic). This module rebuilds the
*same function* from a trained :class:`~crystal_pipeline.model.CrystalNet` with:

- Winograd minimal filtering F(4x4, 5x5) for the 5x5 layers (Lavin & Gray 2016):
  each 8x8 input tile becomes 4x4 outputs with 64 multiplies per channel pair
  instead of 400, written as three dense matrix products over all tiles of a chunk
  of images (input transform, 64 batched channel GEMMs, output transform), so MKL
  does the arithmetic. It is exact arithmetic up to float rounding, not an
  approximation; the transform matrices are derived and checked in float64.
- Max-pooling folded into the output transform's row order (the four members of a
  2x2 pool are contiguous blocks), and bias + ReLU applied after the pool, on a
  quarter of the values: ``relu(max(y) + b) == max(relu(y + b))``.
- CN computed only on the window the central crop needs (when that window lies
  inside the image, so reflect padding is never touched and the result is equal).
- Activations kept NHWC end to end; fc1's weight is permuted once so flattening
  NHWC gives the eager model's NCHW order.
- Data parallelism over cores instead of inside each operator: a batch is cut into
  sub-batches that worker threads (one per core) run with one intra-op thread
  each. Every operator then works on a cache-sized chunk with no fork/join per op;
  on 2 cores this measured ~2x the throughput of the same code with 2 intra-op
  threads (docs/plate_labelling.md). PyTorch releases the GIL inside operators.

Which algorithm each 5x5 layer uses is a constructor argument: on a CPU where
MKL-DNN's direct convolution is already near peak, Winograd's memory-bound
transforms can cost more than the multiplies they save. ``docs/plate_labelling.md``
records the measurement behind the default.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from crystal_pipeline.ingest.imaging import default_workers
from crystal_pipeline.model.inference import as_image_batch, batched_softmax
from crystal_pipeline.model.network import CN_WINDOW, CrystalNet, contrast_normalize

#: Interpolation points for F(m, 5): the usual well-conditioned small set.
_POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5)
#: Algorithms for conv2/conv3 by default; see the module docstring and the docs' table.
DEFAULT_ALGORITHMS: dict[str, str] = {"conv2": "winograd", "conv3": "winograd"}
#: Images transformed together: large enough for efficient GEMMs, small enough that
#: the 4x-expanded tile data of conv2 (3.2 MB per image) stays in cache.
DEFAULT_CHUNK = 4
#: Images one worker thread takes at a time (see FastCrystalNet.logits).
DEFAULT_SUB_BATCH = 8


@functools.lru_cache(maxsize=None)
def winograd_matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A^T, G, B^T)`` of F(m, r) in float64 such that for a 1-D correlation
    ``y = A^T [(G g) * (B^T d)]``.

    A^T and G follow the Cook-Toom construction on ``_POINTS`` plus the point at
    infinity; B^T is then the unique solution of the identity's linear equations,
    solved and verified here rather than typed in from a paper, so a typo cannot
    silently corrupt every prediction.
    """
    n = m + r - 1
    points = _POINTS[: n - 1]
    if len(points) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} finite points; have {len(_POINTS)}")
    at = np.zeros((m, n))
    g = np.zeros((n, r))
    for j, p in enumerate(points):
        f = np.prod([p - q for q in points if q != p])
        at[:, j] = [p**i for i in range(m)]
        g[j] = [p**k / f for k in range(r)]
    at[m - 1, n - 1] = 1.0
    g[n - 1, r - 1] = 1.0
    # sum_j AT[i,j] G[j,k] BT[j,l] = [l == i + k] for all i, k, l: linear in BT.
    rows, rhs = [], []
    for i in range(m):
        for k in range(r):
            for col in range(n):
                row = np.zeros((n, n))
                row[:, col] = at[i] * g[:, k]
                rows.append(row.ravel())
                rhs.append(1.0 if col == i + k else 0.0)
    system, target = np.array(rows), np.array(rhs)
    solution = np.linalg.lstsq(system, target, rcond=None)[0]
    if np.abs(system @ solution - target).max() > 1e-9:
        raise ArithmeticError(f"no exact Winograd F({m}, {r}) for points {points}")
    return at, g, solution.reshape(n, n)


@dataclass
class WinogradConvPool:
    """``relu(maxpool2x2(conv5x5_same(x) + b))`` on NHWC input via F(4x4, 5x5).

    ``u`` holds the transformed filters (64, C, K); ``bb`` the input transform
    (64, 64) = B^T (x) B^T; ``aa`` the output transform (16, 64) with its rows
    ordered (pool member, pooled position) so pooling is a max over 4 blocks.
    """

    u: torch.Tensor
    bb: torch.Tensor
    aa: torch.Tensor
    bias: torch.Tensor
    chunk: int = DEFAULT_CHUNK
    m: int = 4

    @classmethod
    def from_conv(cls, conv: torch.nn.Conv2d, chunk: int = DEFAULT_CHUNK) -> "WinogradConvPool":
        if conv.kernel_size != (5, 5) or conv.padding != (2, 2) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError("WinogradConvPool needs a 5x5, stride 1, padding 2 convolution")
        m, r = 4, 5
        n = m + r - 1
        at, g, bt = winograd_matrices(m, r)
        w = conv.weight.detach().to("cpu", torch.float64)  # K, C, 5, 5
        gt = torch.from_numpy(g)
        u = torch.einsum("ak,ockl,bl->abco", gt, w, gt).reshape(n * n, w.shape[1], w.shape[0])
        aa = np.kron(at, at)  # rows (i, j), i, j in 0..3 (output row, column in the tile)
        # Reorder rows to (di, dj, pi, pj) with i = 2 pi + di: pool members lead.
        order = [(2 * pi + di) * m + (2 * pj + dj) for di in range(2) for dj in range(2)
                 for pi in range(2) for pj in range(2)]
        return cls(
            u=u.float().contiguous(),
            bb=torch.from_numpy(np.kron(bt, bt)).float(),
            aa=torch.from_numpy(aa[order]).float().contiguous(),
            bias=conv.bias.detach().to("cpu", torch.float32).clone(),
            chunk=chunk,
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self._chunk(x[i : i + self.chunk]) for i in range(0, x.shape[0], self.chunk)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _chunk(self, x: torch.Tensor) -> torch.Tensor:
        n_img, h, w, c = x.shape
        m, n = self.m, self.m + 4
        k = self.u.shape[2]
        th, tw = -(-h // m), -(-w // m)
        # 'same' padding of 2, plus whatever completes the last tile.
        xp = F.pad(x, (0, 0, 2, 2 + tw * m - w, 2, 2 + th * m - h))
        s = xp.stride()
        tiles = xp.as_strided((n, n, n_img, th, tw, c), (s[1], s[2], s[0], m * s[1], m * s[2], s[3]))
        v = (self.bb @ tiles.reshape(n * n, -1)).view(n * n, n_img * th * tw, c)
        prod = torch.bmm(v, self.u)  # (64, tiles, K)
        y = (self.aa @ prod.view(n * n, -1)).view(4, -1).amax(dim=0)
        y = y.view(2, 2, n_img, th, tw, k).permute(2, 3, 0, 4, 1, 5).reshape(n_img, th * 2, tw * 2, k)
        return torch.relu_(y[:, : h // 2, : w // 2] + self.bias)


@dataclass
class DirectConvPool:
    """The same layer through PyTorch's own convolution (MKL-DNN on CPU), NHWC in/out."""

    conv: torch.nn.Conv2d

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x.permute(0, 3, 1, 2), self.conv.weight, self.conv.bias, padding=self.conv.padding)
        return torch.relu_(F.max_pool2d(y, 2)).permute(0, 2, 3, 1)


class FastCrystalNet:
    """An inference-only CrystalNet that computes what the eager model computes.

    Build with :meth:`from_model`; call :meth:`predict_proba` on uint8 images
    (N, R, R). Holds its own copies of the weights (the source model is not
    modified and may be garbage-collected).
    """

    #: The arithmetic of its layers (fp32 throughout; :class:`~.bf16_cpu.Bf16CrystalNet` says bf16).
    precision = "fp32"

    def __init__(self, model: CrystalNet, algorithms: dict[str, str] | None = None,
                 chunk: int = DEFAULT_CHUNK, threads: int | None = None,
                 sub_batch: int = DEFAULT_SUB_BATCH) -> None:
        algorithms = {**DEFAULT_ALGORITHMS, **(algorithms or {})}
        model = model.eval()
        self.threads = max(1, threads if threads is not None else default_workers())
        self.sub_batch = max(1, int(sub_batch))
        self._pool: ThreadPoolExecutor | None = None
        self.resolution = model.resolution
        self.num_classes = model.num_classes
        self.crop = model.crop
        self.cn_eps = model.cn_eps
        self.algorithms = dict(algorithms)
        self.artifact_meta: dict[str, Any] = dict(getattr(model, "artifact_meta", {}) or {})
        mean = model.pixel_mean.detach().float().cpu()
        self.inv_std = (1.0 / model.pixel_std.detach().float().cpu())
        self.mean = mean
        self.conv1 = _clone_conv(model.conv1).to(memory_format=torch.channels_last)
        self.layers = {}
        for name in ("conv2", "conv3"):
            conv = _clone_conv(getattr(model, name))
            algo = algorithms[name]
            if algo == "winograd":
                self.layers[name] = WinogradConvPool.from_conv(conv, chunk)
            elif algo == "direct":
                self.layers[name] = DirectConvPool(conv.to(memory_format=torch.channels_last))
            else:
                raise ValueError(f"unknown algorithm {algo!r} for {name}: use 'winograd' or 'direct'")
        self.conv4 = _clone_conv(model.conv4).to(memory_format=torch.channels_last)
        side = (model.fc1.in_features // model.conv4.out_channels) ** 0.5
        side = int(round(side))
        fc1_w = model.fc1.weight.detach().cpu().view(-1, model.conv4.out_channels, side, side)
        self.fc1_w = fc1_w.permute(0, 2, 3, 1).reshape(fc1_w.shape[0], -1).contiguous()
        self.fc1_b = model.fc1.bias.detach().cpu().clone()
        self.fc2_w, self.fc2_b = model.fc2.weight.detach().cpu().clone(), model.fc2.bias.detach().cpu().clone()
        self.out_w, self.out_b = model.out.weight.detach().cpu().clone(), model.out.bias.detach().cpu().clone()

    @classmethod
    def from_model(cls, model: CrystalNet, *, algorithms: dict[str, str] | None = None,
                   chunk: int = DEFAULT_CHUNK, threads: int | None = None,
                   sub_batch: int = DEFAULT_SUB_BATCH) -> "FastCrystalNet":
        """``threads``: cores to use (default: all this process may use)."""
        return cls(model, algorithms, chunk, threads, sub_batch)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    # -- layers 0-1: standardization and CN, only where the crop looks ------------
    def normalize_crop(self, images: torch.Tensor) -> torch.Tensor:
        """(N, crop, crop) float32: the eager model's normalize + center crop.

        CN at a crop pixel reads x within +-3 (the mean) of pixels within +-3 (the
        variance), so a halo of 6 suffices; when the crop offset leaves that halo
        inside the image, reflect padding never matters and the result is equal.
        """
        if images.dim() == 4:
            images = images[:, 0]
        if tuple(images.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"CrystalNet({self.resolution}) expects (N, {self.resolution}, "
                             f"{self.resolution}) grey images, got {tuple(images.shape)}")
        offset = (self.resolution - self.crop) // 2
        halo = 2 * (CN_WINDOW // 2)
        if offset >= halo:
            lo, hi = offset - halo, offset + self.crop + halo
            x = (images[:, lo:hi, lo:hi].float() - self.mean[0, :, lo:hi, lo:hi]) * self.inv_std[0, :, lo:hi, lo:hi]
            x = x.unsqueeze(1)
            pad = CN_WINDOW // 2
            v = x[..., pad:-pad, pad:-pad] - _box_mean_valid(x)  # side - 6
            var = _box_mean_valid(v * v)  # side - 12 == crop
            y = v[..., pad:-pad, pad:-pad] / torch.sqrt(var + self.cn_eps)
            return y[:, 0]
        x = (images.float().unsqueeze(1) - self.mean) * self.inv_std
        y = contrast_normalize(x, CN_WINDOW, self.cn_eps)
        return y[:, 0, offset : offset + self.crop, offset : offset + self.crop]

    def logits(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Logits (N, num_classes), equal to the eager model's up to float rounding.

        The convolutional part runs per sub-batch on ``threads`` worker threads with
        PyTorch's intra-op thread count set to 1 (restored afterwards); the fully
        connected layers then run once on the whole batch with ``threads`` intra-op
        threads, because their cost is reading 53 MB of weights, which a skinny
        sub-batch would repeat for every 8 images.
        """
        images = torch.as_tensor(images)
        if images.dim() == 2:
            images = images.unsqueeze(0)
        previous = torch.get_num_threads()
        try:
            if self.threads <= 1 or images.shape[0] <= self.sub_batch:
                torch.set_num_threads(self.threads)
                features = self._features(images)
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="crystalnet")
                torch.set_num_threads(1)
                parts = [self._pool.submit(self._features, images[i : i + self.sub_batch])
                         for i in range(0, images.shape[0], self.sub_batch)]
                features = torch.cat([p.result() for p in parts])
                torch.set_num_threads(self.threads)
            return self._head(features)
        finally:
            torch.set_num_threads(previous)

    @torch.inference_mode()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Layers 0-10: (N, features) in NHWC flatten order."""
        x = self.normalize_crop(images).unsqueeze(1).contiguous(memory_format=torch.channels_last)
        x = F.conv2d(x, self.conv1.weight, self.conv1.bias, padding=2)
        x = torch.relu_(F.max_pool2d(x, 2)).permute(0, 2, 3, 1)  # NHWC view of channels_last
        x = self.layers["conv2"](x.contiguous())
        x = self.layers["conv3"](x.contiguous())
        x = x.permute(0, 3, 1, 2)  # channels_last NCHW view
        x = torch.relu_(F.conv2d(x, self.conv4.weight, self.conv4.bias, stride=2))
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC flatten (fc1_w permuted to match)

    @torch.inference_mode()
    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Layers 11-13 on features from :meth:`_features`."""
        x = torch.relu_(torch.addmm(self.fc1_b, x, self.fc1_w.t()))
        x = torch.relu_(torch.addmm(self.fc2_b, x, self.fc2_w.t()))
        return torch.addmm(self.out_b, x, self.out_w.t())

    def predict_proba(self, images: torch.Tensor | np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Class probabilities (N, num_classes) float32, like :func:`model.predict_proba`."""
        return batched_softmax(self.logits, as_image_batch(images), batch_size, num_classes=self.num_classes)


def _box_mean_valid(x: torch.Tensor) -> torch.Tensor:
    """The 7x7 box mean without padding, as a 1x7 then a 7x1 mean: 14 adds a pixel
    instead of 49 (PyTorch's 2-D average pool does not separate the window)."""
    x = F.avg_pool2d(x, (1, CN_WINDOW), stride=1)
    return F.avg_pool2d(x, (CN_WINDOW, 1), stride=1)


def optimize_for_cpu(model: CrystalNet, **kwargs: Any) -> FastCrystalNet:
    """The fastest exact CPU path for ``model`` (see :class:`FastCrystalNet`)."""
    return FastCrystalNet.from_model(model, **kwargs)


def _clone_conv(conv: torch.nn.Conv2d) -> torch.nn.Conv2d:
    clone = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                            padding=conv.padding)
    with torch.no_grad():
        clone.weight.copy_(conv.weight.detach().cpu())
        clone.bias.copy_(conv.bias.detach().cpu())
    return clone.eval().requires_grad_(False)
