"""What a model sees when its visual input is taken away: the ablations that show whether an
answer came from the video (`blank`, `shuffled_frames`, `swapped`).

Every ablation keeps the sample's token count and patch grid, so the prompt, positions and
compiled shapes are those of the real sample; only the pixels change:

| name              | videos                                    | images               |
| ----------------- | ----------------------------------------- | -------------------- |
| `blank`           | every patch zero (the processor's mean)   | a blank image (zero) |
| `shuffled_frames` | temporal slices permuted                  | unchanged            |
| `swapped`         | the pixels of another example's video     | another image        |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

ABLATIONS = ("blank", "shuffled_frames", "swapped")
PIXEL_KEYS = {"video": "pixel_values_videos", "image": "pixel_values"}


class CannotAblate(ValueError):
    """The ablation does not apply to this sample (e.g. no other video with the same grid)."""


def shuffle_video_patches(pixels: np.ndarray, grids: np.ndarray, rng: np.random.Generator):
    """Permutes the temporal patches of every video `pixels [P, C]` of patch `grids [M, 3]`.

    Patch rows are grouped by temporal slice (`t` groups of `h * w` rows per video); the slices
    of each video are permuted, so frame order is destroyed while every frame pair is kept.
    """
    out, start = [], 0
    for t, h, w in np.asarray(grids).reshape(-1, 3):
        block = pixels[start : start + t * h * w].reshape(t, h * w, -1)
        out.append(block[rng.permutation(t)].reshape(t * h * w, -1))
        start += t * h * w
    return np.concatenate(out) if out else pixels


def ablate(
    sample: Mapping[str, Any],
    kind: str,
    rng: np.random.Generator,
    other: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`sample` (a `build_sample` dict) with its pixels ablated as `kind` (see the table).

    `other`: for `swapped`, the sample whose pixels replace these; its grids must be equal.
    Raises `CannotAblate` when `kind` does not apply (a sample without pixels, or, for
    `shuffled_frames`, without a video of two or more temporal slices).
    """
    if kind not in ABLATIONS:
        raise ValueError(f"unknown visual ablation {kind!r}; expected one of {ABLATIONS}")
    present = [m for m, key in PIXEL_KEYS.items() if key in sample]
    if not present:
        raise CannotAblate(f"{sample.get('id')}: no image or video to ablate")
    out = dict(sample)
    if kind == "blank":
        for m in present:
            out[PIXEL_KEYS[m]] = np.zeros_like(sample[PIXEL_KEYS[m]])
    elif kind == "shuffled_frames":
        grids = sample.get("video_grid_thw")
        if grids is None or np.asarray(grids)[:, 0].max() < 2:
            raise CannotAblate(f"{sample.get('id')}: no video of two or more temporal slices")
        out["pixel_values_videos"] = shuffle_video_patches(
            sample["pixel_values_videos"], grids, rng
        )
    else:
        if other is None:
            raise CannotAblate(f"{sample.get('id')}: no other sample to take pixels from")
        for m in present:
            grid = f"{m}_grid_thw"
            if grid not in other or not np.array_equal(other[grid], sample[grid]):
                raise CannotAblate(
                    f"{sample.get('id')}: {other.get('id')} has no {m} of grid "
                    f"{np.asarray(sample[grid]).tolist()}"
                )
            out[PIXEL_KEYS[m]] = np.asarray(other[PIXEL_KEYS[m]])
    return out


__all__ = ["ABLATIONS", "CannotAblate", "ablate", "shuffle_video_patches"]
