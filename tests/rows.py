"""Test helper: the rows layout of transformers-layout (flat) prompts."""

import numpy as np

from vlmm_jax.models.positions import rope_index, row_vision_inputs


def _runs(row: np.ndarray, token: int) -> list[int]:
    """Start positions of the runs of `token` in one row of ids."""
    hit = row == token
    return [i for i in range(len(row)) if hit[i] and (i == 0 or not hit[i - 1])]


def rows_from_flat(inputs, config, num_patches=None) -> dict:
    """The rows-layout prompt arrays (`policy` docstring) of flat `inputs`: positions and rope
    deltas from `rope_index`, each row's items in order of appearance in `visual_pixels`."""
    ids = np.asarray(inputs["input_ids"])
    mask = np.asarray(inputs.get("attention_mask", np.ones_like(ids)))
    grids = {k: inputs.get(k) for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")}
    pos, deltas = rope_index(
        ids, config, attention_mask=mask, **{k: v for k, v in grids.items() if v is not None}
    )
    out = {
        "input_ids": ids.astype(np.int32),
        "attention_mask": mask.astype(np.int32),
        "position_ids": np.asarray(pos, np.int32),
        "rope_deltas": np.asarray(deltas, np.int32),
    }
    rows = [[] for _ in ids]
    for pk, gk, token in (
        ("pixel_values", "image_grid_thw", config.image_token_id),
        ("pixel_values_videos", "video_grid_thw", config.video_token_id),
    ):
        if inputs.get(pk) is None:
            continue
        item_grids = np.asarray(inputs[gk]).reshape(-1, 3)
        ends = np.cumsum(item_grids.prod(1))
        j = 0
        for r, row in enumerate(ids):
            for start in _runs(row, token):
                pixels = np.asarray(inputs[pk])[ends[j] - item_grids[j].prod() : ends[j]]
                rows[r].append((start, pixels, tuple(int(x) for x in item_grids[j])))
                j += 1
    if any(rows):
        ordered = [[(p, g) for _, p, g in sorted(row, key=lambda x: x[0])] for row in rows]
        out["visual_pixels"], out["vision_layout"] = row_vision_inputs(
            ordered, config.vision, num_patches
        )
    return out
