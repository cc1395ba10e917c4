"""Collating samples into batches: packed rows, padded rows, left-padded prompts; shape buckets.

A packed row holds several samples one after another; `segment_ids` number them 1..n (0 =
padding) so the decoder's attention never crosses samples, and each sample keeps the positions
its own `rope_index` gave it (they restart at 0 per segment). Worked example, `L = 10`, samples
`a` (4 tokens) and `b` (3 tokens) packed into one row:

    input_ids     a0 a1 a2 a3 b0 b1 b2 pad pad pad
    segment_ids    1  1  1  1  2  2  2   0   0   0
    position_ids   0  1  2  3  0  1  2   0   0   0   (each of the 3 M-RoPE axes)
    loss_mask      .  .  1  1  .  .  1   .   .   .

Visual patches come in one of two layouts (`visual_layout`):

- `"rows"` (training; the batch axis shards): `visual_pixels [B, P, C]`, each row's items in
  order of appearance, padded to a bucketed P with one dummy item per row, and per-row
  `vision_layout` arrays `[B, ...]` (`positions.row_vision_inputs`); the model reads them with
  `visual_pixels=..., vision_layout=...`.
- `"flat"` (transformers' layout): `pixel_values [Pi, C]` / `pixel_values_videos [Pv, C]` of all
  samples concatenated in row-major order (images, then videos, as the model's `embed` reads
  them), padded to a bucketed row count by one dummy item appended last, and the flat
  `vision_layout` over image then video grids.

Either way the vision tower runs a dummy item in its own windows and frames and no placeholder
token reads its features. Grids (`*_grid_thw`, `second_per_grid_ts`) have a per-batch item
count, so under `jit` pass only the fixed-shape keys (`FIXED_SHAPE_KEYS`, see
`pipeline.batch_arrays`), whose shapes depend only on the buckets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlmm_jax.models.config import ModelConfig
from vlmm_jax.models.positions import row_layouts, row_vision_inputs, vision_layout

VISUAL_LAYOUTS = ("rows", "flat")

# Keys whose shapes depend only on the bucket (batch size, length bucket, patch bucket).
FIXED_SHAPE_KEYS = (
    "input_ids",
    "segment_ids",
    "attention_mask",
    "position_ids",
    "loss_mask",
    "pixel_values",
    "pixel_values_videos",
    "visual_pixels",
    "vision_layout",
    "rope_deltas",
)


def round_up(n: int, multiple: int, buckets: Sequence[int] | None = None) -> int:
    """The smallest bucket >= n (when `buckets` is given; ValueError past the largest), else
    n rounded up to a multiple of `multiple` (0 stays 0)."""
    if buckets:
        for b in sorted(buckets):
            if b >= n:
                return int(b)
        raise ValueError(f"{n} is above the largest bucket {max(buckets)}")
    return -(-n // multiple) * multiple


def _visual(samples: Sequence[Mapping[str, Any]], pixel_key: str, grid_key: str):
    pix = [s[pixel_key] for s in samples if pixel_key in s]
    grids = [np.asarray(s[grid_key]).reshape(-1, 3) for s in samples if pixel_key in s]
    return pix, grids


def collate_visual(
    samples: Sequence[Mapping[str, Any]],
    config: ModelConfig,
    *,
    patch_multiple: int = 256,
    patch_buckets: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Concatenates the visual inputs of `samples` (in order) and pads the patch rows.

    Returns:
      `pixel_values [Pi, C]` + `image_grid_thw [Mi, 3]` when any sample has an image,
      `pixel_values_videos [Pv, C]` + `video_grid_thw [Mv, 3]` + `second_per_grid_ts [Mv]` when
      any has a video, and `vision_layout` (over image then video grids) when either. Pi + Pv is
      bucketed; the padding is one dummy item (zero pixels) at the end of the last modality.
    """
    v = config.vision
    img_pix, img_grids = _visual(samples, "pixel_values", "image_grid_thw")
    vid_pix, vid_grids = _visual(samples, "pixel_values_videos", "video_grid_thw")
    spg = [
        np.asarray(s["second_per_grid_ts"], np.float32).reshape(-1)
        for s in samples
        if "pixel_values_videos" in s
    ]
    out: dict[str, Any] = {}
    total = sum(len(p) for p in img_pix + vid_pix)
    if not total:
        return out
    unit = v.merge_unit
    if patch_multiple % unit:
        raise ValueError(f"patch_multiple={patch_multiple} must be a multiple of {unit}")
    pad = round_up(total, patch_multiple, patch_buckets) - total
    if pad % unit:
        raise ValueError(f"patch buckets must be multiples of {unit}; padding {total} by {pad}")
    if pad:
        dummy_pix = np.zeros((pad, v.patch_dim), np.float32)
        dummy_grid = np.array([[1, v.spatial_merge_size, pad // v.spatial_merge_size]])
        if vid_pix:
            vid_pix.append(dummy_pix)
            vid_grids.append(dummy_grid)
            spg.append(np.ones((1,), np.float32))
        else:
            img_pix.append(dummy_pix)
            img_grids.append(dummy_grid)
    grids = []
    if img_pix:
        out["pixel_values"] = np.concatenate(img_pix).astype(np.float32)
        out["image_grid_thw"] = np.concatenate(img_grids).astype(np.int64)
        grids.append(out["image_grid_thw"])
    if vid_pix:
        out["pixel_values_videos"] = np.concatenate(vid_pix).astype(np.float32)
        out["video_grid_thw"] = np.concatenate(vid_grids).astype(np.int64)
        out["second_per_grid_ts"] = np.concatenate(spg)
        grids.append(out["video_grid_thw"])
    out["vision_layout"] = vision_layout(np.concatenate(grids), v)
    return out


def collate_row_visual(
    rows: Sequence[Sequence[Mapping[str, Any]]],
    config: ModelConfig,
    *,
    patch_multiple: int = 256,
    patch_buckets: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Per-row visual inputs: `visual_pixels [B, P, C]` and `vision_layout {name: [B, ...]}`
    (P = the largest row's patch count, bucketed), plus for the host the unpadded grids of all
    samples (`image_grid_thw`, `video_grid_thw`, `second_per_grid_ts`) and `row_items`: per
    row, `(kind, first patch, (t, h, w))` of each item, kind "image" or "video". `{}` when no
    sample has a visual item."""
    items = []
    for row in rows:
        items.append(
            [
                (s[pk], tuple(int(x) for x in np.asarray(s[gk]).reshape(-1, 3)[0]))
                for s in row
                for pk, gk in (
                    ("pixel_values", "image_grid_thw"),
                    ("pixel_values_videos", "video_grid_thw"),
                )
                if pk in s
            ]
        )
    sizes = [sum(len(p) for p, _ in row) for row in items]
    if not max(sizes, default=0):
        return {}
    unit = config.vision.merge_unit
    if patch_multiple % unit:
        raise ValueError(f"patch_multiple={patch_multiple} must be a multiple of {unit}")
    num_patches = round_up(max(sizes), patch_multiple, patch_buckets)
    pixels, layout = row_vision_inputs(items, config.vision, num_patches)
    out: dict[str, Any] = {"visual_pixels": pixels, "vision_layout": layout}
    out["row_items"] = _row_items(rows)
    samples = [s for row in rows for s in row]
    for key in ("image_grid_thw", "video_grid_thw"):
        grids = [np.asarray(s[key]).reshape(-1, 3) for s in samples if key in s]
        if grids:
            out[key] = np.concatenate(grids).astype(np.int64)
    spg = [
        np.asarray(s["second_per_grid_ts"]).reshape(-1)
        for s in samples
        if "second_per_grid_ts" in s
    ]
    if spg:
        out["second_per_grid_ts"] = np.concatenate(spg).astype(np.float32)
    return out


def _row_items(rows) -> list[list[tuple[str, int, tuple[int, int, int]]]]:
    """Per row, `(kind, first patch row, grid)` of its items in order of appearance (the order
    `collate_row_visual` lays them out in `visual_pixels`)."""
    out = []
    for row in rows:
        items, start = [], 0
        for s in row:
            for kind, pk, gk in (
                ("image", "pixel_values", "image_grid_thw"),
                ("video", "pixel_values_videos", "video_grid_thw"),
            ):
                if pk in s:
                    grid = tuple(int(x) for x in np.asarray(s[gk]).reshape(-1, 3)[0])
                    items.append((kind, start, grid))
                    start += len(s[pk])
        out.append(items)
    return out


# The fixed-shape arrays of a rows-layout prompt batch (what the sampler and the policy read).
PROMPT_KEYS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "rope_deltas",
    "visual_pixels",
    "vision_layout",
)


def prompt_arrays(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The prompt arrays of an RL-mode batch in the rows layout (`collate_rows(left_pad=True,
    visual_layout="rows")`), ready for `hosts.global_rows`.

    Rows past the batch's examples (a final partial batch) are empty; each becomes a one-token
    dummy prompt (its last token unmasked) so that every row can be decoded; callers drop the
    outputs of rows past `len(batch["examples"])`.
    """
    if "pixel_values" in batch or "pixel_values_videos" in batch:
        raise ValueError("prompt_arrays: expected a rows-layout batch (visual_layout='rows')")
    out = {k: batch[k] for k in PROMPT_KEYS if batch.get(k) is not None}
    empty = ~np.asarray(out["attention_mask"]).any(axis=1)
    if empty.any():
        out["attention_mask"] = np.array(out["attention_mask"])
        out["attention_mask"][empty, -1] = 1
    return out


FLAT_PROMPT_KEYS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
)


def flat_prompt_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """transformers-layout prompt inputs of a flat RL-mode batch (`visual_layout="flat"`), for
    the single-prompt calls of the test-time scaling strategies; rows past the batch's
    examples are dropped (the flat pixel arrays hold only the real examples' items)."""
    out = {k: batch[k] for k in FLAT_PROMPT_KEYS if batch.get(k) is not None}
    n = len(batch["examples"]) if "examples" in batch else len(out["input_ids"])
    out["input_ids"], out["attention_mask"] = out["input_ids"][:n], out["attention_mask"][:n]
    return out


def pad_prompt_rows(
    prompts: Mapping[str, Any],
    row_items: Sequence[Sequence[tuple]] | None,
    config: ModelConfig,
    *,
    length: int,
    num_patches: int,
    pad_id: int,
) -> dict[str, Any]:
    """A rows-layout prompt batch (`prompt_arrays`) grown to `length` tokens (more left padding;
    `rope_deltas` shift with it) and `num_patches` patch rows per row (a larger dummy item,
    its vision layout rebuilt from `row_items`), so that the batches of several hosts agree in
    shape before they become one global array."""
    out = dict(prompts)
    t = prompts["input_ids"].shape[1]
    if length < t:
        raise ValueError(f"pad_prompt_rows: length {length} is below the batch's {t}")
    if length > t:
        d = length - t
        out["input_ids"] = np.pad(prompts["input_ids"], ((0, 0), (d, 0)), constant_values=pad_id)
        out["attention_mask"] = np.pad(prompts["attention_mask"], ((0, 0), (d, 0)))
        out["position_ids"] = np.pad(prompts["position_ids"], ((0, 0), (0, 0), (d, 0)))
        out["rope_deltas"] = np.asarray(prompts["rope_deltas"]) - d
    if prompts.get("visual_pixels") is None:
        if num_patches:
            raise ValueError(
                "pad_prompt_rows: a text-only batch cannot join hosts whose batches have visual "
                "inputs (mix text-only and visual examples within every host's batches)"
            )
        return out
    p = prompts["visual_pixels"].shape[1]
    if num_patches > p:
        out["visual_pixels"] = np.pad(
            prompts["visual_pixels"], ((0, 0), (0, num_patches - p), (0, 0))
        )
        grids = [[g for _, _, g in items] for items in row_items]
        out["vision_layout"] = row_layouts(grids, config.vision, num_patches)
    return out


def collate_rows(
    rows: Sequence[Sequence[Mapping[str, Any]]],
    config: ModelConfig,
    *,
    length: int,
    pad_id: int,
    left_pad: bool = False,
    visual_layout: str = "rows",
    patch_multiple: int = 256,
    patch_buckets: Sequence[int] | None = None,
) -> dict[str, Any]:
    """A batch of `len(rows)` rows of `length` tokens from rows of samples (`build_sample` dicts).

    Args:
      rows: per row, the samples it holds (one for padded / prompt batches, several packed);
        empty rows are all padding.
      length: row length L (the samples of a row must fit).
      pad_id: the token id of padding.
      left_pad: right-align each row (prompt batches for generation).
      visual_layout: "rows" (`collate_row_visual`) or "flat" (`collate_visual`).
      patch_multiple / patch_buckets: patch rows (per row, or per batch when flat) are padded
        to a multiple of `patch_multiple`, or to the smallest of `patch_buckets` that fits.

    Returns:
      dict of `input_ids int32 [B, L]`, `segment_ids int32 [B, L]` (1..n per row, 0 = pad),
      `attention_mask int32 [B, L]`, `position_ids int32 [3, B, L]`, `loss_mask bool [B, L]`,
      `rope_deltas int32 [B, 1]` (max position + 1 - L: positions of generated tokens are
      cache slot + delta), the visual keys of the layout, and host-side lists `ids`, `sources`,
      `examples` (per sample, row-major), `num_samples`, `num_tokens`.
    """
    if visual_layout not in VISUAL_LAYOUTS:
        raise ValueError(f"visual_layout must be one of {VISUAL_LAYOUTS}, got {visual_layout!r}")
    b = len(rows)
    input_ids = np.full((b, length), pad_id, np.int32)
    segment_ids = np.zeros((b, length), np.int32)
    position_ids = np.zeros((3, b, length), np.int32)
    loss_mask = np.zeros((b, length), bool)
    max_pos = np.full((b,), -1, np.int64)
    for r, row in enumerate(rows):
        used = sum(int(s["num_tokens"]) for s in row)
        if used > length:
            raise ValueError(f"collate_rows: row {r} holds {used} tokens, above length={length}")
        off = length - used if left_pad else 0
        for k, s in enumerate(row):
            n = int(s["num_tokens"])
            sl = slice(off, off + n)
            input_ids[r, sl] = s["input_ids"]
            segment_ids[r, sl] = k + 1
            position_ids[:, r, sl] = s["position_ids"]
            loss_mask[r, sl] = s["loss_mask"]
            if n:
                max_pos[r] = max(max_pos[r], int(np.max(s["position_ids"])))
            off += n
    samples = [s for row in rows for s in row]
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "segment_ids": segment_ids,
        "attention_mask": (segment_ids > 0).astype(np.int32),
        "position_ids": position_ids,
        "loss_mask": loss_mask,
        "rope_deltas": (np.maximum(max_pos, 0) + 1 - length).astype(np.int32)[:, None],
    }
    if visual_layout == "rows":
        visual = collate_row_visual(
            rows, config, patch_multiple=patch_multiple, patch_buckets=patch_buckets
        )
    else:
        visual = collate_visual(
            samples, config, patch_multiple=patch_multiple, patch_buckets=patch_buckets
        )
    batch.update(visual)
    batch["ids"] = [s.get("id") for s in samples]
    batch["sources"] = [s.get("source") for s in samples]
    batch["examples"] = [s.get("example") for s in samples]
    batch["num_samples"] = len(samples)
    batch["num_tokens"] = int(sum(int(s["num_tokens"]) for s in samples))
    return batch
