"""Does the vision tower's output tell the objects apart? A linear probe on merged visual tokens.

For synthetic videos the colour under every merged token is known from the pixels. The probe
fits a ridge-regression classifier (closed form, one-vs-rest) from each merged token's features
to the colour that fills most of its object pixels ("background" when objects cover less than
`min_cover` of it), on the tokens of the first half of the videos, and scores the second half:

  object_accuracy   accuracy on the held-out tokens that hold an object (chance: 1 / colours)
  mean_cosine       mean cosine similarity of two visual tokens of one video: near 1 means the
                    tower maps every token to almost the same vector (the features collapsed)
  visual_norm       mean L2 norm of a visual token, beside `text_norm`, that of a text token
                    embedding (what the decoder's first layer sees side by side)

A collapsed tower (mean cosine -> 1) leaves the decoder nothing to read; a probe far above chance
says the colour is there, and any failure to use it lies in the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from vlmm_jax.data.synthetic.render import COLORS
from vlmm_jax.models import Qwen2_5_VL

BACKGROUND = "background"


def token_colours(frames: np.ndarray, grid: Sequence[int], config, min_cover: float = 0.25):
    """The label of each merged token of `frames uint8 [F, H, W, 3]` (processed at their own
    size) with patch `grid (t, h, w)`: a colour of `COLORS` or `BACKGROUND`, in the tower's
    output order (t, then rows, then columns of merged tokens)."""
    v = config.vision
    t, h, w = (int(x) for x in grid)
    m, tp = v.spatial_merge_size, v.temporal_patch_size
    side = v.patch_size * m  # pixels per merged token along each axis
    if frames.shape[1] != h * v.patch_size or frames.shape[2] != w * v.patch_size:
        raise ValueError(
            f"frames of {frames.shape[1]}x{frames.shape[2]} px do not match the patch grid "
            f"{h}x{w} of {v.patch_size} px"
        )
    names = list(COLORS)
    rgb = frames.astype(np.int32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    codes = np.array([(r << 16) | (g << 8) | b for r, g, b in COLORS.values()])
    index = np.full(packed.shape, -1)
    for k, code in enumerate(codes):
        index[packed == code] = k
    labels = []
    for ti in range(t):
        clip = index[ti * tp : (ti + 1) * tp]
        for i in range(h // m):
            for j in range(w // m):
                block = clip[:, i * side : (i + 1) * side, j * side : (j + 1) * side]
                counts = np.bincount(block[block >= 0], minlength=len(names))
                best = int(counts.argmax())
                covered = counts[best] / block.size
                labels.append(names[best] if covered >= min_cover else BACKGROUND)
    return labels


def ridge_probe(x_train, y_train, x_test, classes, l2: float = 1e-2) -> np.ndarray:
    """Predictions of a one-vs-rest ridge classifier on standardised features."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a = np.concatenate([(x_train - mu) / sd, np.ones((len(x_train), 1))], 1)
    b = (np.asarray(y_train)[:, None] == np.asarray(classes)[None]).astype(np.float64)
    w = np.linalg.solve(a.T @ a + l2 * len(a) * np.eye(a.shape[1]), a.T @ b)
    z = np.concatenate([(x_test - mu) / sd, np.ones((len(x_test), 1))], 1) @ w
    return np.asarray(classes)[z.argmax(1)]


def probe(
    model: Qwen2_5_VL, params, records: Sequence[Any], samples: Sequence[dict]
) -> dict[str, Any]:
    """The figures of the module docstring over `records` (synthetic records with `frames`);
    `samples[i]` is the `build_sample` dict of `records[i]` (pixels and grid)."""
    if len(records) != len(samples):
        raise ValueError(f"{len(records)} records but {len(samples)} samples")
    if len(records) < 4:
        raise ValueError("the vision probe needs at least 4 videos (half fit, half held out)")
    config = model.config
    encode = jax.jit(
        lambda p, x, grid: model.apply({"params": p}, x, grid, method=Qwen2_5_VL.encode_vision),
        static_argnums=2,
    )
    feats, labels, cosines, norms = [], [], [], []
    for record, s in zip(records, samples, strict=True):
        grid = tuple(int(g) for g in np.asarray(s["video_grid_thw"]).reshape(-1))
        f = np.asarray(encode(params, s["pixel_values_videos"], (grid,)), np.float64)
        feats.append(f)
        labels.append(token_colours(record.frames, grid, config))
        unit = f / np.linalg.norm(f, axis=-1, keepdims=True)
        cos = unit @ unit.T
        cosines.append(cos[np.triu_indices(len(f), 1)].mean())
        norms.append(np.linalg.norm(f, axis=-1).mean())
    half = len(records) // 2
    x_tr, x_te = np.concatenate(feats[:half]), np.concatenate(feats[half:])
    y_tr = np.concatenate(labels[:half])
    y_te = np.concatenate(labels[half:])
    classes = [BACKGROUND, *COLORS]
    pred = ridge_probe(x_tr, y_tr, x_te, classes)
    objects = y_te != BACKGROUND
    embed = np.asarray(params["embed_tokens"], np.float64)
    return {
        "object_accuracy": float((pred[objects] == y_te[objects]).mean())
        if objects.any()
        else None,
        "object_tokens": int(objects.sum()),
        "chance": 1.0 / len(COLORS),
        "mean_cosine": float(np.mean(cosines)),
        "visual_norm": float(np.mean(norms)),
        "text_norm": float(np.linalg.norm(embed, axis=-1).mean()),
    }


__all__ = ["BACKGROUND", "probe", "ridge_probe", "token_colours"]
