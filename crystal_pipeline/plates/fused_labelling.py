"""What a plate's labelling reads for a fused (visible + UV) model: each drop's two pictures.

A model with ``in_channels == 2`` (``model.fusion``) labels a visible picture stacked with
its UV partner (the accepted UV file of the same plate, inspection, well and drop). A
visible picture without one cannot be read by that model: it is quarantined with the reason
(never dropped), so a plate without UV pictures belongs to a visible-only model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from crystal_pipeline.ingest.archive import WellFile

NO_UV = "no UV picture beside it: the fused visible + UV model reads both (label this plate with a visible model)"


def fused_files(files: Sequence[WellFile]) -> tuple[list[WellFile], dict[Path, Path]]:
    """(the files labelling accounts for, visible path -> its UV partner's path). Visible files
    without an accepted UV partner come back with :data:`NO_UV` as their error."""
    key = lambda f: (f.plate_id, f.inspection, f.slot)  # noqa: E731
    partners = {key(f): f.path for f in files if f.imaging == "uv" and f.error is None}
    out, uv_of = [], {}
    for f in files:
        if f.imaging == "uv":
            if f.error is not None:
                out.append(f)  # a lone UV picture stays on the quarantine list
            continue
        if f.error is None and key(f) not in partners:
            f = dataclasses.replace(f, error=NO_UV)
        elif f.error is None:
            uv_of[f.path] = partners[key(f)]
        out.append(f)
    return out, uv_of


def pair_decoder(uv_of: dict[Path, Path], resolution: int, workers: int, chunksize: int, crop: str = "centre"
                 ) -> Callable[[list[Path]], Iterator[tuple[int, object]]]:
    """``decode(visible paths)`` yielding ``(k, (2, res, res) uint8 or UnreadableImage)``: both
    pictures of each drop decoded on the same threads as a visible-only plate's, in order.
    With ``crop='drop'`` each picture's drop is located on that picture (docs/decisions.md)."""
    from crystal_pipeline.ingest import imaging

    def decode(paths: list[Path]):
        both = [p for v in paths for p in (v, uv_of[v])]
        pending = None
        for j, result in imaging.decode_threaded(both, resolution, workers, chunksize, crop=crop):
            if j % 2 == 0:
                pending = result
                continue
            bad = next((r for r in (pending, result) if isinstance(r, imaging.UnreadableImage)), None)
            yield j // 2, bad if bad is not None else np.stack([pending, result])

    return decode


def model_mismatch(model, files: Sequence[WellFile], model_version: str) -> str | None:
    """Why ``model`` must not label a plate of ``files``, or None. A fused model on a plate
    without one accepted UV picture would quarantine every well (:data:`NO_UV`): that is a
    wrong choice of model, not a plate of bad files, so the step fails saying which model
    to name instead (docs/decisions.md, "Which model labels a plate"; ``plates.model_choice``
    chooses a visible model by itself where one is production). A visible-only model
    on a UV plate is fine: it reads the visible pictures, as before UV."""
    from crystal_pipeline.model.fusion import model_channels

    if model_channels(model) == 1 or any(f.imaging == "uv" and f.error is None for f in files):
        return None
    return no_uv_problem(model_version)


def no_uv_problem(model_version: str) -> str:
    """What to do when the fused model ``model_version`` is the one offered for a plate without UV."""
    return (f"the model {model_version} is fused (visible + UV) and this plate has no UV pictures; "
            "label it with a visible-only model (promote one, or plate_predictions config "
            "model_version=<a visible model's version>) or add its UV pictures (<well>.uv.png)")
