"""A jitted sampler: prefill a (video) prompt once, fan the KV cache out, decode in a while loop.

Shapes (letters as in `vlmm_jax.models.config`): B prompts, n samples per prompt, R = B * n
output rows (prompt-major: row `i * n + j` is sample j of prompt i), T prompt length,
N = `max_new_tokens`, V vocab.

    prefill   [B, T] prompt + pixels ---- vision tower + decoder, once per prompt ----> cache [B]
    fan out   cache, rope_deltas, last logits: `jnp.repeat(x, n, batch axis)` -------> [R]
    decode    lax.while_loop: choose a token per row, write it at slot T + i, one decoder step

Prompts are left-padded (`attention_mask` 0 on the left): every row then writes its new tokens at
the same cache slot, pad slots carry segment id 0 and are never attended, and the 3D M-RoPE text
positions continue from each row's own prompt via the model's `rope_deltas`.

Randomness is per row: the key of row r at step i is `fold_in(fold_in(rng, row_ids[r]), i)`, so a
sample depends only on its row id (default r), never on the batch it is drawn in. The shared-prefix
path and the naive path (each prompt repeated n times through the whole model) therefore draw the
same tokens. With one key per prompt (`rng [B]`), row `b * n + j` uses `rng[b]` and row id j: a
batch of prompts draws what each prompt alone would with its own key (batched test-time scaling).

A row stops after an EOS id, after the last token of any stop sequence, or after N tokens; the
stop token counts in `lengths` and gets a log-prob. Finished rows keep stepping with `pad_id`
(fixed shapes) until every row is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vlmm_jax import hosts
from vlmm_jax.inference.sampling import Greedy, SamplingMethod, log_probs
from vlmm_jax.models import Qwen2_5_VL, init_cache, vision_layout
from vlmm_jax.policy import ROW_KEYS, Policy, fan_out, is_rows, model_inputs, repeat_rows

_GREEDY = Greedy()
VISION_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SamplerOutput:
    """What `Sampler.__call__` returns; R = prompts x samples, N = max new tokens.

    tokens: `[R, N]` int32, `pad_id` after a row's end.
    logprobs: `[R, N]` fp32 log-prob of each token under `softmax(logits / temperature)` (before
      top-k/p or min-p truncation: see `sampling`); 0 after the end.
    raw_logprobs: `[R, N]` the same under `softmax(logits)` (temperature 1).
    lengths: `[R]` int32 tokens generated, the stop token included.
    done: `[R]` bool, True where the row stopped on an EOS id or a stop sequence (False: it ran
      out of `max_new_tokens`).
    """

    tokens: jax.Array
    logprobs: jax.Array
    raw_logprobs: jax.Array
    lengths: jax.Array
    done: jax.Array

    @property
    def mask(self) -> jax.Array:
        """`[R, N]` bool, True on generated tokens (stop token included)."""
        return jnp.arange(self.tokens.shape[1])[None, :] < self.lengths[:, None]


def device_inputs(inputs: Mapping[str, Any], model: Qwen2_5_VL) -> dict[str, Any]:
    """The prompt pytree a jitted program takes: device arrays of the model's prompt keys.

    Flat prompts get their host-computed `vision_layout` (the grids must be concrete) and a
    default all-ones mask; rows prompts (see `policy`) pass through, already global arrays or
    host NumPy.
    """
    keys = ("input_ids", "attention_mask", "vision_layout", *ROW_KEYS, *VISION_KEYS)
    args = {k: inputs[k] for k in keys if inputs.get(k) is not None}
    if not is_rows(inputs):
        args.pop("vision_layout", None)
        layout = prompt_layout(inputs, model)
        if layout is not None:
            args["vision_layout"] = layout
    if "attention_mask" not in args:
        args["attention_mask"] = np.ones(np.shape(args["input_ids"]), np.int32)
    return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), args)


def check_left_padded(mask) -> None:
    """ValueError unless every row of a (host) `attention_mask [B, T]` ends with a token."""
    if isinstance(mask, jax.core.Tracer) or (
        isinstance(mask, jax.Array) and not mask.is_fully_addressable
    ):
        return  # checked where the global batch was assembled
    mask = np.asarray(mask)
    if not mask[:, -1].all():
        raise ValueError(
            "attention_mask: prompts must be left-padded (the last column must be all ones); "
            f"rows {np.flatnonzero(mask[:, -1] == 0).tolist()} end in padding"
        )


def as_policy(policy: Policy | Any, model: Qwen2_5_VL) -> Policy:
    """`policy` itself, or bare params wrapped as a single-device `Policy` of `model`."""
    return policy if isinstance(policy, Policy) else Policy(params=policy, model=model)


def _eos_tuple(eos) -> tuple[int, ...]:
    if eos is None:
        return ()
    return (int(eos),) if isinstance(eos, (int, np.integer)) else tuple(int(e) for e in eos)


def grids_of(inputs: Mapping[str, Any]) -> np.ndarray:
    """Image grids then video grids `[M, 3]` as host NumPy (the order `vision_layout` expects)."""
    parts = [
        np.asarray(inputs[k]).reshape(-1, 3)
        for k, p in (("image_grid_thw", "pixel_values"), ("video_grid_thw", "pixel_values_videos"))
        if inputs.get(p) is not None and inputs.get(k) is not None
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)


def prompt_layout(inputs: Mapping[str, Any], model: Qwen2_5_VL):
    """The vision tower's window layout for the prompts' grids (None for text-only prompts)."""
    grids = grids_of(inputs)
    return vision_layout(grids, model.config.vision) if len(grids) else None


def _items_per_row(ids: np.ndarray, token: int) -> np.ndarray:
    """How many vision items (runs of `token`) each row of `ids [B, T]` holds."""
    is_tok = ids == token
    starts = is_tok & ~np.pad(is_tok, ((0, 0), (1, 0)))[:, :-1]
    return starts.sum(axis=1)


def repeat_prompts(inputs: Mapping[str, Any], n: int, config) -> dict[str, np.ndarray]:
    """The naive batch: each prompt (its tokens, pixels, grids) repeated `n` times, prompt-major.

    Host-side NumPy; this is the reference the shared-prefix path is checked against.
    """
    ids = np.asarray(inputs["input_ids"])
    out: dict[str, Any] = {"input_ids": np.repeat(ids, n, axis=0)}
    if inputs.get("attention_mask") is not None:
        out["attention_mask"] = np.repeat(np.asarray(inputs["attention_mask"]), n, axis=0)
    for pix_key, grid_key, token in (
        ("pixel_values", "image_grid_thw", config.image_token_id),
        ("pixel_values_videos", "video_grid_thw", config.video_token_id),
    ):
        if inputs.get(pix_key) is None:
            continue
        grids = np.asarray(inputs[grid_key]).reshape(-1, 3)
        pixels = np.asarray(inputs[pix_key])
        per_row = _items_per_row(ids, token)
        if per_row.sum() != len(grids):
            raise ValueError(
                f"{grid_key}: {len(grids)} grids but the input_ids hold {per_row.sum()} runs of "
                f"token {token}"
            )
        item_end = np.cumsum(per_row)
        patch_end = np.concatenate([[0], np.cumsum(grids.prod(axis=1))])
        pix, grd, spg = [], [], []
        for hi, cnt in zip(item_end, per_row, strict=True):
            lo = hi - cnt
            for _ in range(n):
                pix.append(pixels[patch_end[lo] : patch_end[hi]])
                grd.append(grids[lo:hi])
                if grid_key == "video_grid_thw" and inputs.get("second_per_grid_ts") is not None:
                    spg.append(np.asarray(inputs["second_per_grid_ts"]).reshape(-1)[lo:hi])
        out[pix_key] = np.concatenate(pix)
        out[grid_key] = np.concatenate(grd)
        if spg:
            out["second_per_grid_ts"] = np.concatenate(spg)
    return out


def key_batch_shape(rng: jax.Array) -> tuple[int, ...]:
    """The batch shape of a PRNG key array: typed keys (`jax.random.key`) or raw `uint32`
    ones (`jax.random.PRNGKey`, whose last axis is the key data)."""
    typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    return tuple(rng.shape if typed else rng.shape[:-1])


def row_keys(rng: jax.Array, row_ids: jax.Array) -> jax.Array:
    """One key per row: `fold_in(rng, row_id)`; `rng` one key, or one per row `[R]`."""
    per_row = 0 if key_batch_shape(rng) else None
    return jax.vmap(jax.random.fold_in, in_axes=(per_row, 0))(rng, row_ids)


class Sampler:
    """Autoregressive sampling from a `Policy` with an explicit KV cache.

    Args:
      model: the Flax module (its config gives the defaults below; the parameters, mesh and
        rules come with the policy of each call).
      max_new_tokens: N, the decode budget per row.
      eos_ids: token ids that end a row (None: `model.config.eos_token_id`; `()`: none).
      stop_sequences: token-id sequences that end a row once generated (e.g. the tokens of
        "</answer>"); matched on generated tokens only.
      pad_id: written after a row's end (default `config.pad_token_id` or 0).
      suppress_ids: token ids never sampled (their logits are set to -inf before the method),
        e.g. the vision placeholders `<|video_pad|>`, which a completion must not contain.
      cache_dtype: KV-cache dtype (default the model's compute dtype).
    """

    def __init__(
        self,
        model: Qwen2_5_VL,
        *,
        max_new_tokens: int,
        eos_ids: int | Sequence[int] | None = None,
        stop_sequences: Sequence[Sequence[int]] = (),
        pad_id: int | None = None,
        suppress_ids: Sequence[int] = (),
        cache_dtype: Any = None,
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model = model
        self.config = model.config
        self.max_new_tokens = int(max_new_tokens)
        self.eos_ids = _eos_tuple(self.config.eos_token_id if eos_ids is None else eos_ids)
        self.stop_sequences = tuple(tuple(int(t) for t in s) for s in stop_sequences)
        if any(len(s) == 0 for s in self.stop_sequences):
            raise ValueError("stop_sequences: an empty sequence would stop every row at once")
        default_pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        self.pad_id = int(default_pad if pad_id is None else pad_id)
        self.suppress_ids = tuple(int(t) for t in suppress_ids)
        vocab = self.config.text.vocab_size
        if any(not 0 <= t < vocab for t in self.suppress_ids):
            raise ValueError(f"suppress_ids {self.suppress_ids}: ids must lie in [0, {vocab})")
        self.cache_dtype = jnp.dtype(cache_dtype or self.config.dtype)

    # Samplers that differ only in stop criteria share compiled code: those are traced arrays.
    def _key(self):
        return (self.model, self.pad_id, self.cache_dtype)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, Sampler) and self._key() == other._key()

    # ------------------------------------------------------------------ model calls
    def prepare(self, policy, inputs: Mapping[str, Any]) -> tuple[Policy, dict[str, Any]]:
        """Host side of a call: the policy and the prompt pytree, left padding checked."""
        policy = as_policy(policy, self.model)
        check_left_padded(inputs.get("attention_mask", np.ones((1, 1))))
        args = device_inputs(inputs, self.model)
        if jax.process_count() > 1 and all(x.is_fully_addressable for x in jax.tree.leaves(args)):
            args = hosts.replicated(args, policy.mesh)  # host inputs: the same on every host
        return policy, args

    def prefill(self, policy: Policy, inputs, max_length: int):
        """Runs the prompts `[B, T]` into a fresh cache of `max_length` slots.

        Returns (cache, rope_deltas `[B, 1]`, logits of the last prompt token `[B, V]` fp32).
        Only the last position goes through the LM head.
        """
        b = inputs["input_ids"].shape[0]
        cache = init_cache(self.config, b, max_length, self.cache_dtype)
        out = policy.prefill(inputs, cache)
        logits = policy.logits(out.hidden_states[:, -1:])[:, 0]
        return out.cache, out.rope_deltas, logits

    def step(self, policy: Policy, tokens, cache, rope_deltas):
        """One decode step for tokens `[R]`: returns (logits `[R, V]`, cache)."""
        out = policy.apply(tokens[:, None], cache=cache, rope_deltas=rope_deltas)
        return out.logits[:, 0], out.cache

    # ------------------------------------------------------------------ decode loop
    def stop_arrays(self, eos_ids=None, stop_sequences=None) -> dict[str, jax.Array]:
        """The stop criteria as arrays: `eos [E]`, `stop [S, L]` (sequences right-aligned,
        left-padded with -1 = "any token") and the never-sampled ids `suppress [K]`. Traced, so
        changing them does not recompile."""
        eos = self.eos_ids if eos_ids is None else _eos_tuple(eos_ids)
        seqs = self.stop_sequences if stop_sequences is None else tuple(map(tuple, stop_sequences))
        if any(len(q) == 0 for q in seqs):
            raise ValueError("stop_sequences: an empty sequence would stop every row at once")
        width = max([1, *map(len, seqs)])
        stop = np.full((len(seqs), width), -1, np.int32)
        for i, q in enumerate(seqs):
            stop[i, width - len(q) :] = q
        return {
            "eos": jnp.asarray(eos, jnp.int32).reshape(-1),
            "stop": jnp.asarray(stop),
            "suppress": jnp.asarray(self.suppress_ids, jnp.int32).reshape(-1),
        }

    @staticmethod
    def _stops(stops, recent: jax.Array, token: jax.Array) -> jax.Array:
        """`[R]` bool: `token [R]` is an EOS id or ends a stop sequence (`recent [R, L]` holds the
        last L tokens, -1 before the first)."""
        stop = jnp.any(token[:, None] == stops["eos"][None], axis=1)
        seqs = stops["stop"]  # [S, L]
        match = (recent[:, None, :] == seqs[None]) | (seqs[None] == -1)  # [R, S, L]
        has_token = jnp.any(seqs != -1, axis=1)[None]  # [1, S]
        return stop | jnp.any(jnp.all(match, axis=2) & has_token, axis=1)

    def decode(self, policy, cache, rope_deltas, logits, keys, stops, method, max_new: int):
        """The while loop over `max_new` steps from the logits of the last prompt token.

        Args:
          policy: the policy (adapters already folded in: `Policy.for_inference`).
          cache: rows `[R]` already holding the prompts; logits `[R, V]`; keys `[R]` row keys;
          stops: `stop_arrays()`.
        """
        r = logits.shape[0]
        window = stops["stop"].shape[1]
        state = dict(
            i=jnp.zeros((), jnp.int32),
            logits=logits,
            cache=cache,
            tokens=jnp.full((r, max_new), self.pad_id, jnp.int32),
            logprobs=jnp.zeros((r, max_new), jnp.float32),
            raw_logprobs=jnp.zeros((r, max_new), jnp.float32),
            lengths=jnp.zeros((r,), jnp.int32),
            done=jnp.zeros((r,), bool),
            recent=jnp.full((r, window), -1, jnp.int32),
        )

        def cond(s):
            return (s["i"] < max_new) & ~jnp.all(s["done"])

        def body(s):
            i = s["i"]
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
            logits = s["logits"].at[:, stops["suppress"]].set(-jnp.inf)
            token = method(logits, step_keys)
            logp, raw = log_probs(logits, token, method.temperature)
            alive = ~s["done"]
            token = jnp.where(alive, token, self.pad_id)
            recent = jnp.concatenate([s["recent"][:, 1:], token[:, None]], axis=1)
            stop = alive & self._stops(stops, recent, token)
            col = lambda buf, x: jax.lax.dynamic_update_slice(buf, x[:, None], (0, i))  # noqa: E731
            next_logits, cache = self.step(policy, token, s["cache"], rope_deltas)
            return dict(
                i=i + 1,
                logits=next_logits,
                cache=cache,
                tokens=col(s["tokens"], token),
                logprobs=col(s["logprobs"], jnp.where(alive, logp, 0.0)),
                raw_logprobs=col(s["raw_logprobs"], jnp.where(alive, raw, 0.0)),
                lengths=s["lengths"] + alive.astype(jnp.int32),
                done=s["done"] | stop,
                recent=recent,
            )

        s = jax.lax.while_loop(cond, body, state)
        return SamplerOutput(
            tokens=s["tokens"],
            logprobs=s["logprobs"],
            raw_logprobs=s["raw_logprobs"],
            lengths=s["lengths"],
            done=s["done"],
        )

    def _generate_impl(self, policy, inputs, rng, row_ids, stops, *, method, num_samples, max_new):
        policy = policy.for_inference()  # adapters folded in once, not at every step
        t = inputs["input_ids"].shape[1]
        cache, rope_deltas, logits = self.prefill(policy, inputs, t + max_new)
        cache = fan_out(cache, num_samples)
        rope_deltas = jnp.repeat(rope_deltas, num_samples, axis=0)
        logits = jnp.repeat(logits, num_samples, axis=0)
        keys = row_keys(rng, row_ids)
        return self.decode(policy, cache, rope_deltas, logits, keys, stops, method, max_new)

    # ------------------------------------------------------------------ public entry points
    def __call__(
        self,
        policy: Policy | Any,
        inputs: Mapping[str, Any],
        *,
        rng: jax.Array | None = None,
        method: SamplingMethod = _GREEDY,
        num_samples: int = 1,
        shared_prefix: bool = True,
        row_ids: Any = None,
        max_new_tokens: int | None = None,
        eos_ids: int | Sequence[int] | None = None,
        stop_sequences: Sequence[Sequence[int]] | None = None,
    ) -> SamplerOutput:
        """Samples `num_samples` continuations of each prompt.

        Args:
          policy: a `Policy` (parameters with any sharding, LoRA adapters, mesh and rules), or
            bare params of the sampler's model (one device, no mesh).
          inputs: left-padded prompts in the flat layout (transformers' `input_ids [B, T]`,
            `attention_mask [B, T]`, `pixel_values_videos [P, C]`, `video_grid_thw [M, 3]` as
            host arrays, `second_per_grid_ts [M]`, `pixel_values`, `image_grid_thw`) or the rows
            layout (`position_ids`, `rope_deltas`, `visual_pixels`, `vision_layout`; host arrays
            or global arrays sharded over the batch: see `policy`).
          rng: PRNG key (default `jax.random.key(0)`; unused by `Greedy`), or one key per prompt
            `[B]`: then row `b * n + j` draws with `rng[b]` and row id j, as prompt b alone would.
          method: a `sampling` method.
          num_samples: n continuations per prompt.
          shared_prefix: prefill each prompt once and fan its cache out (True), or run the n
            copies of every prompt through the whole model (False: the naive reference).
          row_ids: `[B * n]` ints naming the rows for the RNG (default `arange(B * n)`; with one key
            per prompt, `j` for sample j of every prompt).
          max_new_tokens: override the sampler's N for this call (a new compilation).
          eos_ids, stop_sequences: override the sampler's stop criteria for this call (no new
            compilation unless their counts or the longest sequence change).

        Returns:
          `SamplerOutput` with R = B * n rows, prompt-major (sharded like the prompts' batch).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        b = np.shape(inputs["input_ids"])[0]
        n = num_samples
        if not shared_prefix and n > 1:
            if is_rows(inputs):
                inputs = repeat_rows(device_inputs(inputs, self.model), n)
            else:
                inputs = repeat_prompts(inputs, n, self.config)
            n = 1
        policy, args = self.prepare(policy, inputs)
        rng = jax.random.key(0) if rng is None else rng
        per_prompt = key_batch_shape(rng) == (b,)
        if not per_prompt and key_batch_shape(rng):
            raise ValueError(f"rng: one key or one per prompt {(b,)}, got shape {rng.shape}")
        if row_ids is None:
            per_row = jnp.arange(num_samples)
            row_ids = jnp.tile(per_row, b) if per_prompt else jnp.arange(b * num_samples)
        row_ids = jnp.asarray(row_ids)
        if row_ids.shape != (b * num_samples,):
            raise ValueError(f"row_ids: expected shape {(b * num_samples,)}, got {row_ids.shape}")
        if per_prompt:  # one key per row, its prompt's
            rng = jnp.repeat(rng, num_samples)
        with policy.context():
            return _generate(
                self,
                policy,
                args,
                rng,
                row_ids,
                self.stop_arrays(eos_ids, stop_sequences),
                method=method,
                num_samples=n,
                max_new=max_new,
            )

    def _next_logprobs_impl(self, policy, inputs):
        policy = policy.for_inference()
        out = policy.apply(**model_inputs(inputs), return_logits=False)
        logits = policy.logits(out.hidden_states[:, -1:])[:, 0]
        return jax.nn.log_softmax(logits, axis=-1)

    def next_token_logprobs(self, policy, inputs: Mapping[str, Any]) -> jax.Array:
        """`[B, V]` log-probs of the token after each (left-padded) prompt: one forward, no cache.

        What a verifier reads: `next_token_logprobs(...)[:, yes_id]` is log p("Yes").
        """
        policy, args = self.prepare(policy, inputs)
        with policy.context():
            return _next_logprobs(self, policy, args)


_generate = jax.jit(
    Sampler._generate_impl, static_argnames=("self", "method", "num_samples", "max_new")
)
_next_logprobs = jax.jit(Sampler._next_logprobs_impl, static_argnames=("self",))
