"""Positions: the decoder's 3D M-RoPE ids and the vision tower's window layout.

`rope_index` is pure `jnp` (jit-able with traced grids): it reproduces Qwen2.5-VL's
`get_rope_index` without a Python loop over tokens. Worked example (merge 2, one video of
grid t=2, h=4, w=4 -> 2x2x2 = 8 visual tokens, 2 text tokens before, 1 after, interval 2):

    tokens      a  b  V V V V V V V V  c
    t           0  1  2 2 2 2 4 4 4 4  5      (time: 2 + floor(frame * interval))
    h           0  1  2 2 3 3 2 2 3 3  5
    w           0  1  2 3 2 3 2 3 2 3  5      ("max" advance: c = 1 + max over the item + 1)

`sample_positions` runs it for one sample on the host's CPU backend, compiled once per padded
length (data pipelines, random batches). `vision_layout` is host-side NumPy: the window
reordering of Qwen2.5-VL's vision tower depends on the grid sizes, which fix array shapes, so it
is computed once per batch shape, outside `jit`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax.models.config import ModelConfig, VisionConfig


def _item_positions(is_tok, grid_thw, interval, merge, advance, per_frame=False):
    """Per-token (t, h, w) offsets and the position advance for one modality.

    Args:
      is_tok: `[B, L]` bool, the modality's placeholder tokens (valid ones only).
      grid_thw: `[M, 3]` int grids of the M items, in order of appearance (row-major over B).
      interval: `[M]` float, temporal position step per grid (tokens_per_second * seconds).
      per_frame: each temporal grid of an item is its own run of tokens (Qwen3-VL's videos:
        one `<t seconds><|vision_start|>...<|vision_end|>` group per temporal patch), placed
        as an image of grid (1, h, w).
    Returns:
      thw `[3, B, L]` int offsets (0 off the modality) and advance `[B, L]` int (non-zero only on
      an item's last token: how far the text position moves past the item).
    """
    b, l = is_tok.shape
    prev = jnp.pad(is_tok, ((0, 0), (1, 0)))[:, :-1]
    start = (is_tok & ~prev).reshape(-1)
    flat = is_tok.reshape(-1)
    run = jnp.cumsum(start) - 1
    grid_thw = grid_thw.astype(jnp.int32)
    if per_frame:  # run r belongs to the item whose frames' running count first exceeds r
        run = jnp.searchsorted(jnp.cumsum(grid_thw[:, 0]), run, side="right")
    item = jnp.clip(run, 0, grid_thw.shape[0] - 1)
    count = jnp.cumsum(flat) - 1
    offset = count - jax.lax.cummax(jnp.where(start, count, -1))
    grid = grid_thw[item]  # [B*L, 3]
    if per_frame:
        grid = grid.at[:, 0].set(1)
    gt, gh, gw = grid[:, 0], grid[:, 1] // merge, grid[:, 2] // merge
    step = interval.astype(jnp.float32)[item]
    ti = offset // (gh * gw)
    t_pos = jnp.floor(ti.astype(jnp.float32) * step).astype(jnp.int32)
    h_pos = (offset // gw) % gh
    w_pos = offset % gw
    if advance == "max":
        t_max = jnp.floor((gt - 1).astype(jnp.float32) * step).astype(jnp.int32)
        extent = jnp.maximum(t_max, jnp.maximum(gh, gw) - 1) + 1
    else:  # "spatial": transformers >= 5
        extent = jnp.maximum(gh, gw)
    is_last = flat & (offset == gt * gh * gw - 1)
    thw = jnp.stack([t_pos, h_pos, w_pos]) * flat[None]
    adv = jnp.where(is_last, extent, 0)
    return thw.reshape(3, b, l), adv.reshape(b, l)


def rope_index(
    input_ids: jax.Array,
    config: ModelConfig,
    *,
    attention_mask: jax.Array | None = None,
    image_grid_thw: jax.Array | None = None,
    video_grid_thw: jax.Array | None = None,
    second_per_grid_ts: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """3D M-RoPE position ids, as Qwen2.5-VL's / Qwen3-VL's `get_rope_index`.

    Qwen3-VL places every temporal grid of a video as its own item of grid (1, h, w) (the
    prompt gives each its textual timestamp instead) and always uses the "spatial" advance.

    Args:
      input_ids: `[B, L]` token ids with image/video placeholder tokens expanded.
      attention_mask: `[B, L]` 1 for real tokens, 0 for padding (left or right).
      image_grid_thw / video_grid_thw: `[M, 3]` patch grids (before merging), in order.
      second_per_grid_ts: `[M_video]` seconds per temporal grid (default 1.0).

    Returns:
      position_ids `[3, B, L]` int32 (padding gets 0) and rope_deltas `[B, 1]`: the offset to add
      to a cache slot index to get the text position of a generated token (max + 1 - L).
    """
    b, l = input_ids.shape
    valid = jnp.ones((b, l), bool) if attention_mask is None else attention_mask.astype(bool)
    merge = config.vision.spatial_merge_size
    qwen3 = config.is_qwen3
    advance = "spatial" if qwen3 else config.vision_position_advance
    thw = jnp.zeros((3, b, l), jnp.int32)
    adv = valid.astype(jnp.int32)  # text tokens advance by one
    if image_grid_thw is not None and image_grid_thw.shape[0]:
        is_img = valid & (input_ids == config.image_token_id)
        ones = jnp.ones((image_grid_thw.shape[0],), jnp.float32)
        i_thw, i_adv = _item_positions(is_img, jnp.asarray(image_grid_thw), ones, merge, advance)
        thw, adv = thw + i_thw, jnp.where(is_img, i_adv, adv)
    if video_grid_thw is not None and video_grid_thw.shape[0]:
        is_vid = valid & (input_ids == config.video_token_id)
        spg = (
            jnp.ones((video_grid_thw.shape[0],), jnp.float32)
            if second_per_grid_ts is None
            else jnp.asarray(second_per_grid_ts, jnp.float32).reshape(-1)
        )
        interval = jnp.float32(config.vision.tokens_per_second) * spg
        v_thw, v_adv = _item_positions(
            is_vid, jnp.asarray(video_grid_thw), interval, merge, advance, per_frame=qwen3
        )
        thw, adv = thw + v_thw, jnp.where(is_vid, v_adv, adv)
    base = jnp.cumsum(adv, axis=1) - adv  # exclusive prefix sum: the text position counter
    positions = jnp.where(valid[None], base[None] + thw, 0).astype(jnp.int32)
    row_max = jnp.max(jnp.where(valid[None], positions, -1), axis=(0, 2))
    deltas = (jnp.maximum(row_max, 0) + 1 - l)[:, None]
    return positions, deltas.astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=1)
def _rope_jit(ids, config, mask, image_grid_thw, video_grid_thw, second_per_grid_ts):
    return rope_index(
        ids,
        config,
        attention_mask=mask,
        image_grid_thw=image_grid_thw,
        video_grid_thw=video_grid_thw,
        second_per_grid_ts=second_per_grid_ts,
    )[0]


def sample_positions(
    input_ids: np.ndarray,
    config: ModelConfig,
    *,
    image_grid_thw: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    second_per_grid_ts: np.ndarray | None = None,
    length_multiple: int = 256,
) -> np.ndarray:
    """M-RoPE positions `int32 [3, L]` of one sample: the model's `rope_index`, run on the host.

    Runs on the CPU backend (grain workers and the host never touch the accelerator); the
    length is padded to a multiple of `length_multiple` so few programs are compiled.
    """
    ids = np.asarray(input_ids, np.int32).reshape(-1)
    n = len(ids)
    padded = -(-max(n, 1) // length_multiple) * length_multiple
    ids_p = np.zeros((1, padded), np.int32)
    ids_p[0, :n] = ids
    mask = np.zeros((1, padded), np.int32)
    mask[0, :n] = 1

    def grid(g):
        return None if g is None or not len(g) else np.asarray(g, np.int32).reshape(-1, 3)

    spg = None if second_per_grid_ts is None else np.asarray(second_per_grid_ts, np.float32)
    cpu = jax.local_devices(backend="cpu")[0]
    with jax.default_device(cpu):
        pos = _rope_jit(ids_p, config, mask, grid(image_grid_thw), grid(video_grid_thw), spg)
    return np.asarray(pos)[:, 0, :n]


def text_positions(slots: jax.Array, rope_deltas: jax.Array) -> jax.Array:
    """`[3, B, T]` positions of text tokens written at cache `slots` `[B, T]` after a prefill."""
    return jnp.broadcast_to((slots + rope_deltas)[None], (3, *slots.shape)).astype(jnp.int32)


def vision_layout(
    grid_thw: np.ndarray, config: VisionConfig, *, batch_items: bool = True
) -> dict[str, np.ndarray]:
    """Window reordering, rotary positions and attention segments of the vision tower.

    Qwen2.5-VL runs its blocks on patches grouped by attention window (windows of
    `window_size // patch_size // merge` merged tokens per side, ragged at the grid edge), and
    restores the original merged-token order after the merger.

    Args:
      grid_thw: `[M, 3]` patch grids of all images and videos in the batch, in input order.

    When every item has the same grid (and `batch_items`), the layout is that of one item with a
    leading item axis `[M, ...]`: the tower then runs the items as a batch, so attention cost
    grows with the items' count, not its square.

    Returns:
      dict of int32 arrays: `patch_order [P]` (window order -> input patch index),
      `merged_inverse [P/4]` (undo the order after merging), `rope_hw [P, 2]` (row and column of
      each patch, in window order), `window_segments [P]` and `frame_segments [P]` (1-based ids of
      the window / temporal slice of each patch, in window order); with a learned position
      table (Qwen3-VL) also `pos_taps [P, 4]` and `pos_weights [P, 4]` (float32), its bilinear
      interpolation to each item's grid.
    """
    grid_thw = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    if batch_items and len(grid_thw) > 1 and (grid_thw == grid_thw[0]).all():
        one = vision_layout(grid_thw[:1], config, batch_items=False)
        return {
            k: np.ascontiguousarray(np.broadcast_to(v, (len(grid_thw), *v.shape)))
            for k, v in one.items()
        }
    m, mu = config.spatial_merge_size, config.merge_unit
    window_index, window_id, frame_id, rope_hw, pos_taps, pos_weights = [], [], [], [], [], []
    offset = windows = frames = 0
    for t, h, w in grid_thw.tolist():
        if h % m or w % m:
            raise ValueError(f"grid {(t, h, w)}: height and width must be multiples of {m}")
        lh, lw = h // m, w // m
        win, wid = _windows(t, lh, lw, config.window_size // m // config.patch_size)
        keep = win >= 0
        window_index.append(win[keep] + offset)
        window_id.append(wid[keep] + windows)
        frame_id.append(win[keep] // (lh * lw) + frames)
        hw = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1)  # [h, w, 2]
        hw = hw.reshape(lh, m, lw, m, 2).transpose(0, 2, 1, 3, 4).reshape(-1, 2)  # merge blocks
        rope_hw.append(np.tile(hw, (t, 1)))
        if config.num_position_embeddings:
            taps, weights = _position_taps(hw, h, w, config.num_position_embeddings)
            pos_taps.append(np.tile(taps, (t, 1)))
            pos_weights.append(np.tile(weights, (t, 1)))
        offset, windows, frames = offset + t * lh * lw, windows + int(wid.max()) + 1, frames + t
    window_index = np.concatenate(window_index)
    patch_order = (window_index[:, None] * mu + np.arange(mu)).reshape(-1)
    layout = {
        "patch_order": patch_order.astype(np.int32),
        "merged_inverse": np.argsort(window_index).astype(np.int32),
        "rope_hw": np.concatenate(rope_hw)[patch_order].astype(np.int32),
        "window_segments": (np.repeat(np.concatenate(window_id), mu) + 1).astype(np.int32),
        "frame_segments": (np.repeat(np.concatenate(frame_id), mu) + 1).astype(np.int32),
    }
    if pos_taps:
        layout["pos_taps"] = np.concatenate(pos_taps)[patch_order].astype(np.int32)
        layout["pos_weights"] = np.concatenate(pos_weights)[patch_order].astype(np.float32)
    return layout


def _windows(t: int, lh: int, lw: int, vws: int) -> tuple[np.ndarray, np.ndarray]:
    """Merged-token indices in window order `[t, n]` (-1: padding) and each slot's window id
    (counted from 0 within the item). `vws` merged tokens per window side; 0: no windows (one
    window per frame, in raster order)."""
    if not vws:
        return np.arange(t * lh * lw).reshape(t, -1), np.repeat(np.arange(t)[:, None], lh * lw, 1)
    nwh, nww = lh // vws + 1, lw // vws + 1  # as the reference: always one padded window
    padded = np.full((t, nwh * vws, nww * vws), -1, np.int64)
    padded[:, :lh, :lw] = np.arange(t * lh * lw).reshape(t, lh, lw)
    win = padded.reshape(t, nwh, vws, nww, vws).transpose(0, 1, 3, 2, 4).reshape(t, -1)
    wid = np.repeat(np.arange(t * nwh * nww).reshape(t, nwh * nww), vws * vws, axis=1)
    return win, wid


def _position_taps(hw: np.ndarray, h: int, w: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps (align_corners=True) of a learned `side x side` position table (`n` =
    side^2 entries) resampled to an `h x w` grid, for the patches at rows/cols `hw [p, 2]`:
    indices `[p, 4]` into the flat table and their weights `[p, 4]` (Qwen3-VL's
    `fast_pos_embed_interpolate`)."""
    side = int(round(n**0.5))
    axes = []
    for pos, size in ((hw[:, 0], h), (hw[:, 1], w)):
        src = pos * (side - 1) / max(size - 1, 1)
        lo = np.floor(src).astype(np.int64)
        frac = src - lo
        axes.append(
            (np.stack([lo, np.minimum(lo + 1, side - 1)], 1), np.stack([1 - frac, frac], 1))
        )
    (rows, wr), (cols, wc) = axes
    taps = (rows[:, :, None] * side + cols[:, None, :]).reshape(-1, 4)
    weights = (wr[:, :, None] * wc[:, None, :]).reshape(-1, 4)
    return taps, weights


def row_vision_inputs(
    rows: list[list[tuple[np.ndarray, tuple[int, int, int]]]],
    config: VisionConfig,
    num_patches: int | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-row vision inputs for the batched path (`visual_pixels=`).

    Args:
      rows: for each batch row, its items in order of appearance: `(pixels [p, C], (t, h, w))`.
      num_patches: the padded patch count P per row (a multiple of the merge unit; default the
        largest row, rounded up). Padding is one dummy item per row whose tokens are never used.

    Returns:
      visual_pixels `[B, P, C]` float32 and the layout dict of `vision_layout`, each `[B, ...]`.
    """
    mu = config.merge_unit
    sizes = [sum(p.shape[0] for p, _ in row) for row in rows]
    if num_patches is None:
        num_patches = max([*sizes, mu])
        num_patches = -(-num_patches // (2 * mu)) * (2 * mu)
    if num_patches % mu or any(s > num_patches for s in sizes):
        raise ValueError(
            f"num_patches={num_patches} must be a multiple of {mu} and >= every row's "
            f"patch count {sizes}"
        )
    pixels = np.zeros((len(rows), num_patches, config.patch_dim), np.float32)
    for b, row in enumerate(rows):
        if row:
            pixels[b, : sizes[b]] = np.concatenate([p for p, _ in row])
    layout = row_layouts([[g for _, g in row] for row in rows], config, num_patches)
    return pixels, layout


def row_layouts(
    rows: list[list[tuple[int, int, int]]], config: VisionConfig, num_patches: int
) -> dict[str, np.ndarray]:
    """The per-row `vision_layout` arrays `[B, ...]` of rows holding items of these grids, in
    order of appearance, each row padded to `num_patches` patch rows by one dummy item."""
    layouts = []
    for row in rows:
        grids = [tuple(int(x) for x in g) for g in row]
        pad = num_patches - sum(t * h * w for t, h, w in grids)
        if pad < 0:
            raise ValueError(f"row_layouts: items {grids} hold more than {num_patches} patches")
        if pad:  # a dummy 1 x m x (pad / m) item; its merged tokens are never placed
            m = config.spatial_merge_size
            grids.append((1, m, pad // m))
        grids = np.array(grids, np.int64).reshape(-1, 3)
        layouts.append(vision_layout(grids, config, batch_items=False))
    return {k: np.stack([lay[k] for lay in layouts]) for k in layouts[0]}
