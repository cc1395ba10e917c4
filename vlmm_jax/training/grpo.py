"""GRPO-family RL from verifiable rewards on video prompts.

One step (driven by `grpo_loop.train_grpo`), for each rollout batch of prompts:
  1. sample   G completions per prompt from the policy (`Sampler`, shared video prefix): global
              prompt arrays sharded over the batch, every host keeps its own rows; with T-GRPO
              also G/2 completions on temporally shuffled frames, which only feed the bonus;
  2. score    the decoded completions on the host (`scoring.RolloutScorer`: pure, batched,
              never raises);
  3. group    Video-R1's temporal bonus on video prompts, group-relative advantages
              (`rl.group_advantages`), DAPO's dynamic sampling (groups of equal rewards drop
              out, and more prompts are drawn until the step is full, bounded);
then `update`: `num_iterations` optimizer steps over all the step's rollouts. The policy's
log-probs come from its shared-prefix pass (`Policy.completion_stats`), the loss is
`rl.grpo_loss`; old log-probs from the policy before the update (when `num_iterations > 1`),
reference log-probs from `Policy.reference()` (when `beta > 0`). A step whose loss or
gradients are not finite changes nothing and is counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from vlmm_jax import hosts
from vlmm_jax.data.packing import pad_prompt_rows, prompt_arrays
from vlmm_jax.inference.sampler import Sampler
from vlmm_jax.inference.sampling import Greedy, RandomSampling, SamplingMethod, TopP
from vlmm_jax.policy import BATCH_AXIS, Policy
from vlmm_jax.rl import (
    dynamic_sampling_mask,
    finalize_metrics,
    group_advantages,
    grpo_loss,
    temporal_bonus,
)
from vlmm_jax.training.rollout import shuffle_video_frames
from vlmm_jax.training.scoring import RolloutScorer
from vlmm_jax.training.state import TrainState, apply_gradients


def rollout_method(cfg: ml_collections.ConfigDict) -> SamplingMethod:
    """Greedy at temperature 0, nucleus when `top_p < 1`, else plain sampling (no sort)."""
    if cfg.temperature == 0:
        return Greedy()
    if cfg.top_p < 1:
        return TopP(temperature=cfg.temperature, p=cfg.top_p)
    return RandomSampling(temperature=cfg.temperature)


@dataclasses.dataclass
class Rollout:
    """One rollout batch, this host's rows. B prompts, G completions each, R = B * G, N tokens.

    prompts: rows-layout prompt arrays `[B, ...]`; tokens `[R, N]`; mask `[R, N]` float32 (0 on
    padding and on dropped groups); rewards `[B, G]` (every reward, the temporal bonus
    included); advantages `[R]`; kept: groups kept; errors: reward calls that failed (scored
    0); figures: this host's means; seconds: wall time of its `generate` calls (the sampler,
    device to host included) and of its `score` calls (the rewards, on the host).
    """

    prompts: dict[str, np.ndarray]
    tokens: np.ndarray
    mask: np.ndarray
    rewards: np.ndarray
    advantages: np.ndarray
    kept: int
    errors: int
    figures: dict[str, float]
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def split(self, pieces: int, group: int) -> list[Rollout]:
        """`pieces` micro-batches of whole groups (gradient accumulation inside the update)."""
        b = self.prompts["input_ids"].shape[0]
        if pieces == 1:
            return [self]
        if b % pieces:
            raise ValueError(f"data.micro_batches={pieces} does not divide {b} prompts per host")
        step = b // pieces
        out = []
        for i in range(pieces):
            p, r = slice(i * step, (i + 1) * step), slice(i * step * group, (i + 1) * step * group)
            out.append(
                Rollout(
                    prompts=jax.tree_util.tree_map_with_path(
                        lambda path, x, p=p: _take_rows(path, x, p), self.prompts
                    ),
                    tokens=self.tokens[r],
                    mask=self.mask[r],
                    rewards=self.rewards[p],
                    advantages=self.advantages[r],
                    kept=0,
                    errors=0,
                    figures={},
                )
            )
        return out


class _Clock:
    """Wall seconds summed per name: `with clock("score"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _take_rows(path, x, rows: slice):
    axis = BATCH_AXIS.get(str(getattr(path[0], "key", "")), 0)
    return x[(slice(None),) * axis + (rows,)]


class GRPO:
    """Rollouts, rewards and updates of the GRPO family (see the module docstring).

    Args:
      policy: the run's policy template (model, mesh, rules; parameters come per call).
      tx: the optimizer. tokenizer: decodes completions, gives the EOS / pad / suppressed ids.
      cfg: `config.grpo`.
      state_shardings: the train state's shardings (the update's output stays on them).
      micro_batches: update pieces per rollout batch (gradient accumulation; whole groups).
      trainable: bool per parameter leaf (`SFTRun.trainable`); gradients are taken for these
        only (frozen parts, the LoRA base: no backward through them, no gradient buffers).
    """

    def __init__(
        self,
        policy: Policy,
        tx: optax.GradientTransformation,
        tokenizer,
        cfg: ml_collections.ConfigDict,
        *,
        state_shardings: TrainState | None = None,
        micro_batches: int = 1,
        trainable=None,
    ):
        if cfg.temporal and cfg.group_size < 2:
            raise ValueError("grpo.temporal needs group_size >= 2 (G/2 shuffled rollouts)")
        self.policy, self.tx, self.tok, self.cfg = policy, tx, tokenizer, cfg
        self.sampler = Sampler(
            policy.model, max_new_tokens=cfg.max_new_tokens, **tokenizer.generation_kwargs()
        )
        self.method = rollout_method(cfg)
        self.scorer = RolloutScorer(cfg.rewards, cfg.get("group_rewards"), cfg.correctness)
        self.micro_batches = micro_batches
        self.trainable = trainable
        self.loss_cfg = dict(
            loss_type=cfg.loss_type,
            eps_low=cfg.eps_low,
            eps_high=cfg.eps_high,
            dual_clip=cfg.dual_clip or None,
            beta=cfg.beta,
            kl_estimator=cfg.kl_estimator,
            kl_clamp=cfg.kl_clamp or None,
            importance_level=cfg.importance_level,
            max_completion_length=cfg.max_new_tokens,
        )
        temperature = cfg.temperature or 1.0  # greedy rollouts: logp under the plain softmax
        stats = functools.partial(_completion_logp, group=cfg.group_size, temperature=temperature)
        self.logp_fn = policy.jit(stats)
        loss = functools.partial(
            _piece_loss,
            policy=policy,
            group=cfg.group_size,
            temperature=temperature,
            loss_cfg=self.loss_cfg,
        )
        grad_out = None
        if state_shardings is not None:  # gradients sharded like their parameters
            rep = NamedSharding(policy.mesh, PartitionSpec())
            trained_sh, _ = split_trainable(state_shardings.params, trainable)
            grad_out = ((rep, rep), trained_sh)
        self.grad_fn = policy.jit(jax.value_and_grad(loss, has_aux=True), out_shardings=grad_out)
        self.add_fn = policy.jit(lambda a, b: jax.tree.map(jnp.add, a, b), donate_argnums=(0,))
        out = None if state_shardings is None else (state_shardings, None)
        self.apply_fn = policy.jit(
            functools.partial(_apply_trainable, tx=tx), out_shardings=out, donate_argnums=(0,)
        )

    # ------------------------------------------------------------------ rollout
    def sample(self, policy: Policy, prompts: dict, rng: jax.Array, n: int):
        """n completions of every (global) prompt; returns this host's rows: tokens `[R, N]`,
        lengths `[R]` and the decoded texts."""
        out = self.sampler(policy, prompts, rng=rng, method=self.method, num_samples=n)
        tokens, lengths = hosts.local_rows(out.tokens), hosts.local_rows(out.lengths)
        texts = [self.tok.decode(t[:k]) for t, k in zip(tokens, lengths, strict=True)]
        return tokens, lengths, texts

    def host_prompts(self, batch: dict) -> dict[str, np.ndarray]:
        """This host's prompt arrays, padded to the largest shape over the hosts (so they join
        one global array)."""
        host = prompt_arrays(batch)
        if jax.process_count() > 1:
            patches = host["visual_pixels"].shape[1] if "visual_pixels" in host else 0
            t, p = hosts.all_hosts_max([host["input_ids"].shape[1], patches])
            host = pad_prompt_rows(
                host,
                batch.get("row_items"),
                self.policy.config,
                length=int(t),
                num_patches=int(p),
                pad_id=self.tok.pad_id,
            )
        return host

    def rollout(self, policy: Policy, batch: dict, rng: jax.Array) -> Rollout:
        """One prompt batch (this host's rows of an RL-mode pipeline batch, rows layout)."""
        cfg, g = self.cfg, self.cfg.group_size
        host = self.host_prompts(batch)
        b = host["input_ids"].shape[0]
        if len(batch["examples"]) != b:
            raise ValueError(f"rollout: {len(batch['examples'])} examples for {b} prompt rows")
        clock = _Clock()
        with clock("generate"):
            tokens, lengths, texts = self.sample(
                policy, hosts.global_rows(host, policy.mesh), rng, g
            )
        examples = [ex.to_reward_example() for ex in batch["examples"] for _ in range(g)]
        with clock("score"):
            scores = self.scorer(texts, examples, lengths, g)
        total, errors = scores.total, scores.errors
        figures = {f"reward_{k}": float(v.mean()) for k, v in scores.parts.items()}
        figures["accuracy"] = float(scores.correct.mean())
        row_items = batch.get("row_items") or [[] for _ in range(b)]
        has_video = np.array([any(kind == "video" for kind, *_ in row) for row in row_items])
        if cfg.temporal and hosts.all_hosts_sum([has_video.any()])[0] > 0:
            bonus, figs, err = self._temporal_bonus(
                policy, host, row_items, has_video, examples, scores, rng, clock
            )
            total, errors = total + bonus, errors + err
            figures.update(figs)
        keep = (
            np.asarray(dynamic_sampling_mask(total)) if cfg.dynamic_sampling else np.ones(b, bool)
        )
        adv = np.asarray(group_advantages(total, scale=cfg.advantage_scale, eps=cfg.adv_eps))
        figures.update(
            reward=float(total.mean()),
            groups_dropped=float(1 - keep.mean()),
            response_tokens=float(lengths.mean()),
        )
        mask = (np.arange(tokens.shape[1])[None] < lengths[:, None]).astype(np.float32)
        return Rollout(
            prompts=host,
            tokens=tokens,
            mask=mask * np.repeat(keep, g)[:, None],
            rewards=total,
            advantages=adv.reshape(-1).astype(np.float32),
            kept=int(keep.sum()),
            errors=errors,
            figures=figures,
            seconds=clock.seconds,
        )

    def _temporal_bonus(self, policy, host, row_items, has_video, examples, scores, rng, clock):
        """T-GRPO: G/2 completions per prompt on shuffled frames and Video-R1's bonus `[B, G]`
        (0 or alpha), gated per prompt as Video-R1 does: image and text prompts get none."""
        cfg, g = self.cfg, self.cfg.group_size
        b = host["input_ids"].shape[0]
        seed = int(jax.random.randint(rng, (), 0, 2**31 - 1))
        first = hosts.host_offset(b)  # global row ids: the shuffle does not depend on the hosts
        rngs = [np.random.default_rng([seed, first + i]) for i in range(b)]
        shuffled = dict(host)
        shuffled["visual_pixels"] = shuffle_video_frames(host["visual_pixels"], row_items, rngs)
        prompts = hosts.global_rows(shuffled, policy.mesh)
        with clock("generate"):
            _, _, s_texts = self.sample(policy, prompts, jax.random.fold_in(rng, 1), g // 2)
        s_examples = [e for e in examples[::g] for _ in range(g // 2)]
        with clock("score"):
            s_correct, errors = self.scorer.correct(s_texts, s_examples)
        bonus, applied = temporal_bonus(
            scores.correct,
            s_correct.reshape(b, g // 2),
            alpha=cfg.temporal_alpha,
            mu=cfg.temporal_mu,
        )
        applied = np.asarray(applied) & has_video
        shuffled = s_correct.reshape(b, g // 2)[has_video]
        figures = {  # over this host's video prompts (NaN when it has none)
            "shuffled_accuracy": float(shuffled.mean()) if has_video.any() else float("nan"),
            "temporal_bonus_applied": float(applied[has_video].mean())
            if has_video.any()
            else float("nan"),
        }
        return np.asarray(bonus) * has_video[:, None], figures, errors

    # ------------------------------------------------------------------ update
    def update(
        self, state: TrainState, rollouts: list[Rollout], reference: Policy | None
    ) -> tuple[TrainState, dict[str, float]]:
        """`num_iterations` optimizer steps over the step's rollouts (this host's rows).

        Gradients are summed over the pieces (rollout batches, split into `micro_batches`), each
        normalised by the global token / sequence counts (all pieces, all hosts), so the pieces
        change nothing; `bnpo` averages each piece's token mean over the pieces.
        """
        g = self.cfg.group_size
        pieces = [p for r in rollouts for p in r.split(self.micro_batches, g)]
        counts = hosts.all_hosts_sum(
            [
                sum(float(p.mask.sum()) for p in pieces),
                sum(int((p.mask.sum(1) > 0).sum()) for p in pieces),
            ]
        )
        norms = {
            "num_global_tokens": jnp.float32(counts[0]),
            "num_global_sequences": jnp.float32(counts[1]),
            "num_chunks": len(pieces),
        }
        mesh = self.policy.mesh
        device = []
        for p in pieces:
            d = hosts.global_rows(
                {"tokens": p.tokens, "mask": p.mask, "advantages": p.advantages}, mesh
            )
            d["prompts"] = hosts.global_rows(p.prompts, mesh)
            if self.cfg.num_iterations > 1:
                d["old_logp"] = self.logp_fn(self.policy.with_params(state.params), d)
            if self.cfg.beta > 0:
                d["ref_logp"] = self.logp_fn(reference, d)
            device.append(d)
        figures = {}
        for _ in range(self.cfg.num_iterations):
            grads, loss, sums = None, 0.0, {}
            trained, frozen = split_trainable(state.params, self.trainable)
            for d in device:
                (piece_loss, metrics), piece_grads = self.grad_fn(trained, frozen, d, norms)
                grads = piece_grads if grads is None else self.add_fn(grads, piece_grads)
                loss += float(piece_loss)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            state, opt = self.apply_fn(state, grads, jnp.float32(loss))
            figures = {"loss": loss, **finalize_metrics(sums)}
            figures.update({k: float(v) for k, v in opt.items()})
            if figures["skipped"]:
                break
        return state, figures


def _completion_logp(policy: Policy, piece: dict, *, group: int, temperature: float):
    """`[R, N]` log-probs of a piece's completions under `policy` (old or reference pass)."""
    stats = policy.completion_stats(
        piece["prompts"], piece["tokens"], group=group, temperature=temperature
    )
    return stats["logp"]


def split_trainable(params, trainable):
    """(trained, frozen): `params` with None at the frozen leaves, and at the trained ones."""
    if trainable is None:
        return params, jax.tree.map(lambda _: None, params)
    pick = lambda keep: lambda p, t: p if t == keep else None  # noqa: E731
    return jax.tree.map(pick(True), params, trainable), jax.tree.map(pick(False), params, trainable)


def _join(trained, frozen):
    return jax.tree.map(lambda t, f: f if t is None else t, trained, frozen, is_leaf=_is_none)


def _is_none(x) -> bool:
    return x is None


def _apply_trainable(state: TrainState, grads, loss, *, tx):
    """`apply_gradients` with zeros for the frozen leaves (`grads` holds None there)."""
    grads = jax.tree.map(
        lambda g, p: jnp.zeros_like(p) if g is None else g, grads, state.params, is_leaf=_is_none
    )
    return apply_gradients(state, grads, loss, tx=tx)


def _piece_loss(trained, frozen, piece, norms, *, policy, group, temperature, loss_cfg):
    """The GRPO loss of one update piece, normalised by the global counts in `norms`;
    differentiated with respect to `trained` only (`split_trainable`)."""
    params = _join(trained, jax.lax.stop_gradient(frozen))
    stats = policy.with_params(params).completion_stats(
        piece["prompts"], piece["tokens"], group=group, temperature=temperature
    )
    loss, metrics = grpo_loss(
        stats["logp"],
        piece.get("old_logp"),
        piece.get("ref_logp"),
        piece["advantages"],
        piece["mask"],
        **loss_cfg,
        **norms,
    )
    metrics["entropy_sum"] = jax.lax.stop_gradient(jnp.sum(stats["entropy"] * piece["mask"]))
    return loss, metrics
