"""GRPO-family RL from verifiable rewards on video prompts.

One step:
  1. rollout: G completions per prompt with the jitted sampler (shared video prefix), from the
     policy's own (sharded) parameters; with T-GRPO also G/2 completions on temporally shuffled
     video patches, which only feed the temporal bonus;
  2. rewards: a weighted sum of `vlmm_jax.rewards` (+ Video-R1's temporal bonus on accuracy);
  3. advantages per group (`rl.group_advantages`); DAPO dynamic sampling drops groups whose
     rewards are all equal and draws more prompts until the batch is full (bounded tries);
  4. update: `num_iterations` optimizer steps on the rollout, the policy log-probs computed with
     the shared-prefix pass (`rollout.shared_prefix_logp`), the loss `rl.grpo_loss`; old
     log-probs from a forward pass at rollout time when `num_iterations > 1`, reference
     log-probs from the frozen initial parameters when `beta > 0`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vlmm_jax.inference.sampler import Sampler, prompt_layout
from vlmm_jax.inference.sampling import Greedy, TopP
from vlmm_jax.models import Qwen2_5_VL
from vlmm_jax.rewards import GROUP_REGISTRY, REGISTRY
from vlmm_jax.rl import (
    dynamic_sampling_mask,
    finalize_metrics,
    group_advantages,
    grpo_loss,
    temporal_bonus,
)
from vlmm_jax.training.rollout import shared_prefix_logp, shuffle_video_patches
from vlmm_jax.training.state import TrainState

PROMPT_KEYS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
)


def prompt_inputs(batch: dict) -> dict:
    """The sampler's inputs from an RL pipeline batch (flat, transformers-style vision).

    A final partial batch pads with empty rows after its examples; those rows are dropped
    (the flat pixel arrays only hold the real examples' items).
    """
    out = {k: batch[k] for k in PROMPT_KEYS if batch.get(k) is not None}
    n = len(batch["examples"]) if "examples" in batch else len(out["input_ids"])
    out["input_ids"], out["attention_mask"] = out["input_ids"][:n], out["attention_mask"][:n]
    return out


def reward_fn(weights: dict[str, float]):
    """`(completion, example) -> (total, per-reward dict)` for a weighted sum of rewards."""
    unknown = sorted(set(weights) - set(REGISTRY))
    if unknown:
        raise ValueError(f"grpo.rewards: unknown reward(s) {unknown}; known {sorted(REGISTRY)}")

    def fn(completion, example):
        parts = {k: REGISTRY[k](completion, example) for k in weights}
        return sum(w * parts[k] for k, w in weights.items()), parts

    return fn


def group_reward_fn(specs: dict[str, dict]):
    """`(accuracies [B, G], lengths [B, G]) -> (total [B, G], per-reward means)` for the
    weighted group rewards (`rewards.GROUP_REGISTRY`: Video-R1's length bonus, DAPO's overlong
    penalty). `specs` maps a name to its `weight` and the function's keyword arguments."""
    unknown = sorted(set(specs) - set(GROUP_REGISTRY))
    if unknown:
        raise ValueError(
            f"grpo.group_rewards: unknown reward(s) {unknown}; known {sorted(GROUP_REGISTRY)}"
        )
    specs = {k: dict(v) for k, v in specs.items()}
    for name, spec in specs.items():
        if "weight" not in spec:
            raise ValueError(f"grpo.group_rewards.{name}: needs a `weight`")

    def fn(accuracies: np.ndarray, lengths: np.ndarray):
        total, means = np.zeros(accuracies.shape), {}
        for name, spec in specs.items():
            kw = {k: v for k, v in spec.items() if k != "weight"}
            part = np.array(
                [
                    GROUP_REGISTRY[name](accuracies=list(a), lengths=[int(x) for x in n], **kw)
                    for a, n in zip(accuracies, lengths, strict=True)
                ]
            )
            total += spec["weight"] * part
            means[f"reward_{name}"] = float(part.mean())
        return total, means

    return fn


@functools.partial(jax.jit, static_argnames=("model", "group", "temperature"))
def policy_logp(params, prompts, layout, completions, *, model, group, temperature):
    """Jitted shared-prefix log-probs `[R, N]` (grids travel as arrays: the layout is given)."""
    return shared_prefix_logp(params, model, prompts, layout, completions, group, temperature)


def chunk_loss(params, chunk, norms, *, model, group, temperature, loss_cfg):
    """The GRPO loss of one rollout chunk, normalised by the global counts in `norms`."""
    logp, entropy = shared_prefix_logp(
        params,
        model,
        chunk["prompts"],
        chunk["layout"],
        chunk["tokens"],
        group,
        temperature,
        with_entropy=True,
    )
    loss, metrics = grpo_loss(
        logp,
        chunk.get("old_logp"),
        chunk.get("ref_logp"),
        chunk["advantages"],
        chunk["mask"],
        **loss_cfg,
        **norms,
    )
    metrics["entropy_sum"] = jax.lax.stop_gradient(jnp.sum(entropy * chunk["mask"]))
    return loss, metrics


class GRPO:
    """Rollouts, rewards and updates of the GRPO family (see the module docstring)."""

    def __init__(
        self,
        model: Qwen2_5_VL,
        tx: optax.GradientTransformation,
        tokenizer,
        cfg: ml_collections.ConfigDict,
        *,
        mesh=None,
        rules=None,
    ):
        self.model, self.tx, self.tok, self.cfg = model, tx, tokenizer, cfg
        self.sampler = Sampler(
            model,
            max_new_tokens=cfg.max_new_tokens,
            **tokenizer.generation_kwargs(),
            mesh=mesh,
            logical_axis_rules=rules,
        )
        self.method = (
            Greedy() if cfg.temperature == 0 else TopP(temperature=cfg.temperature, p=cfg.top_p)
        )
        self.reward = reward_fn(dict(cfg.rewards))
        self.group_reward = group_reward_fn(dict(cfg.get("group_rewards", {})))
        self.loss_cfg = dict(
            loss_type=cfg.loss_type,
            eps_low=cfg.eps_low,
            eps_high=cfg.eps_high,
            beta=cfg.beta,
            kl_estimator=cfg.kl_estimator,
            importance_level=cfg.importance_level,
            max_completion_length=cfg.max_new_tokens,
        )
        self._grad = {}

    # ------------------------------------------------------------------ rollout
    def sample(self, params, prompts, rng, n):
        out = self.sampler(params, prompts, rng=rng, method=self.method, num_samples=n)
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        texts = [self.tok.decode(t[:n_]) for t, n_ in zip(tokens, lengths, strict=True)]
        return out, texts

    def rollout(self, params, batch, rng) -> dict | None:
        """One prompt batch -> a chunk (tokens, mask, advantages, figures), or None if every
        group was dropped by dynamic sampling."""
        cfg, g = self.cfg, self.cfg.group_size
        prompts = prompt_inputs(batch)
        out, texts = self.sample(params, prompts, rng, g)
        examples = [ex.to_reward_example() for ex in batch["examples"] for _ in range(g)]
        scored = [self.reward(t, e) for t, e in zip(texts, examples, strict=True)]
        parts = {k: np.array([s[1][k] for s in scored]) for k in cfg.rewards}
        acc = np.array([REGISTRY["accuracy"](t, e) for t, e in zip(texts, examples, strict=True)])
        b = len(batch["examples"])
        lengths = np.asarray(out.lengths).reshape(b, g)
        group_total, group_means = self.group_reward(acc.reshape(b, g), lengths)
        total = np.array([s[0] for s in scored]).reshape(b, g) + group_total
        figures = {f"reward_{k}": float(v.mean()) for k, v in parts.items()}
        figures.update(group_means)
        figures["accuracy"] = float(acc.mean())
        if cfg.temporal and prompts.get("pixel_values_videos") is not None:
            shuffled = dict(prompts)
            shuffled["pixel_values_videos"] = shuffle_video_patches(
                np.asarray(prompts["pixel_values_videos"]),
                np.asarray(prompts["video_grid_thw"]),
                np.random.default_rng(int(jax.random.randint(rng, (), 0, 2**31 - 1))),
            )
            _, s_texts = self.sample(params, shuffled, jax.random.fold_in(rng, 1), g // 2)
            s_examples = [e for e in examples[::g] for _ in range(g // 2)]
            s_acc = np.array(
                [REGISTRY["accuracy"](t, e) for t, e in zip(s_texts, s_examples, strict=True)]
            )
            bonus, applied = temporal_bonus(
                acc.reshape(b, g),
                s_acc.reshape(b, g // 2),
                alpha=cfg.temporal_alpha,
                mu=cfg.temporal_mu,
            )
            total = total + np.asarray(bonus)
            figures["shuffled_accuracy"] = float(s_acc.mean())
            figures["temporal_bonus_applied"] = float(np.mean(applied))
        keep = (
            np.asarray(dynamic_sampling_mask(total)) if cfg.dynamic_sampling else np.ones(b, bool)
        )
        figures["groups_dropped"] = float(1 - keep.mean())
        figures["reward"] = float(total.mean())
        adv = np.asarray(group_advantages(total, scale=cfg.advantage_scale, eps=cfg.adv_eps))
        mask = np.asarray(out.mask, np.float32) * np.repeat(keep, g)[:, None]
        figures["response_tokens"] = float(np.asarray(out.lengths).mean())
        if not keep.any():
            return {"figures": figures, "dropped": True}
        return {
            "prompts": prompts,
            "layout": prompt_layout(prompts, self.model),
            "tokens": jnp.asarray(out.tokens),
            "mask": jnp.asarray(mask),
            "advantages": jnp.asarray(adv.reshape(-1), jnp.float32),
            "figures": figures,
            "dropped": False,
            "kept_groups": int(keep.sum()),
        }

    # ------------------------------------------------------------------ update
    def temperature(self) -> float:
        return self.cfg.temperature or 1.0  # greedy rollouts: logp under the plain softmax

    def update(self, state: TrainState, chunks: list[dict], ref_params) -> tuple[TrainState, dict]:
        """`num_iterations` optimizer steps over all chunks: gradients are summed over chunks,
        each normalised by the global token / sequence counts, so chunking changes nothing."""
        kw = dict(model=self.model, group=self.cfg.group_size, temperature=self.temperature())
        norms = {
            "num_global_tokens": jnp.float32(sum(float(c["mask"].sum()) for c in chunks)),
            "num_global_sequences": jnp.float32(
                sum(float((c["mask"].sum(1) > 0).sum()) for c in chunks)
            ),
        }
        device = []
        for c in chunks:
            d = {
                "prompts": {k: jnp.asarray(v) for k, v in c["prompts"].items()},
                "layout": jax.tree.map(jnp.asarray, c["layout"]),
                "tokens": c["tokens"],
                "mask": c["mask"],
                "advantages": c["advantages"],
            }
            args = (d["prompts"], d["layout"], d["tokens"])
            if self.cfg.num_iterations > 1:
                d["old_logp"] = policy_logp(state.params, *args, **kw)
            if self.cfg.beta > 0:
                d["ref_logp"] = policy_logp(ref_params, *args, **kw)
            device.append(d)
        if "grad" not in self._grad:
            fn = functools.partial(chunk_loss, **kw, loss_cfg=self.loss_cfg)
            self._grad["grad"] = jax.jit(jax.value_and_grad(fn, has_aux=True))
            self._grad["add"] = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
            self._grad["apply"] = jax.jit(self._apply_gradients)
        grad_fn = self._grad["grad"]
        figures = {}
        for _ in range(self.cfg.num_iterations):
            grads, loss, sums = None, 0.0, {}
            for d in device:
                (l, m), g = grad_fn(state.params, d, norms)
                grads = g if grads is None else self._grad["add"](grads, g)
                loss += float(l)
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            state, grad_norm = self._grad["apply"](state, grads)
            figures = {"loss": loss, "grad_norm": float(grad_norm), **finalize_metrics(sums)}
        return state, figures

    def _apply_gradients(self, state: TrainState, grads) -> tuple[TrainState, jax.Array]:
        """One optimizer step and the gradients' global norm, as one jitted program.

        (Op-by-op eager updates on sharded arrays dispatch many small collective programs; on
        XLA's CPU client with several devices they deadlocked in a test, waiting in an
        all-reduce that one device thread never reached.)
        """
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), (
            optax.tree.norm(grads)
        )
