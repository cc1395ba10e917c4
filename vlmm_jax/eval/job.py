"""The evaluation job: `python -m vlmm_jax.main --config=configs/eval_*.py --workdir=DIR`.

`evaluate_checkpoint(config, workdir)` evaluates one model on one dataset with one strategy:

  model     `config.checkpoint_dir`: an orbax checkpoint folder of a previous stage
            (`WORKDIR/checkpoints/STAGE`; only the parameters are restored, at
            `config.checkpoint_step` or the latest step; LoRA adapters are merged), else
            `config.init_from`: a Hugging Face Qwen2.5-VL directory (ours or a real one), else
            random initial weights (a baseline; a warning says so).
  dataset   `config.eval.annotations`: an annotation file in any format of `read_examples`
            (Video-R1, Time-R1, Charades-STA, multiple-choice benchmarks) with its videos, the
            tokenizer from `config.data.tokenizer` (default: `config.init_from`); otherwise the
            split `config.eval.split` of the run's prepared data (`data.source` "synthetic", or
            an annotation source whose `data` context carries its vision options).
  strategy  `config.eval.strategy`: "greedy" (batched, the jitted `Sampler`) or one of the
            test-time scaling strategies of `vlmm_jax.inference.tts` (`STRATEGIES`), one
            question at a time through a `ModelGenerator`.

Every example is scored by `eval.runner.score` (the `accuracy` reward, format, IoU), so the
summary's `accuracy` is the mean of the `score` column of the predictions, with its 95%
bootstrap interval. Beside it (`eval.baselines`): `prior`, the text-only priors fitted on the
training split (`config.eval.priors`), and for greedy `ablations`, the same model with its video
blanked, its frames shuffled or another example's video (`config.eval.ablations`), with the
visual reliance acc(real) - acc(blank) per family. Writes
`predictions_<stage>.jsonl` (one line per example; `predictions_<stage>@<ablation>.jsonl` for
each ablation), the summary (overall and by category, plus
the compute spent per question) to `results.json` under `config.stage`, and `results.md`: the
table of every evaluated stage in that `results.json`, so evaluations of successive stages
(base, SFT, GRPO) into one workdir build one comparison table.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vlmm_jax.data.chat import VisionOptions, build_sample
from vlmm_jax.data.formats import read_examples
from vlmm_jax.data.packing import collate_rows, flat_prompt_inputs, round_up
from vlmm_jax.data.processors import frames_visual
from vlmm_jax.data.tokenizer import load_tokenizer
from vlmm_jax.data.visual_ablations import CannotAblate, ablate
from vlmm_jax.eval.baselines import (
    bootstrap_ci,
    fit_priors,
    paired_bootstrap,
    prior_records,
    scores_by_id,
)
from vlmm_jax.eval.runner import (
    evaluate,
    greedy_generate,
    markdown_table,
    reward_score,
    score,
    summarize,
    write_predictions,
)
from vlmm_jax.inference import tts
from vlmm_jax.inference.sampler import Sampler
from vlmm_jax.inference.sampling import TopP
from vlmm_jax.models import Qwen2_5_VL, load_params
from vlmm_jax.models.lora import base_params
from vlmm_jax.policy import Policy
from vlmm_jax.results import write_stage_results
from vlmm_jax.session import Session

_log = logging.getLogger(__name__)

STRATEGY_NAMES = ("greedy", *tts.STRATEGIES)
SUMMARY_KEYS = ("accuracy", "accuracy_ci", "count", "by_category")  # of a baseline's summary
SWAP_TRIES = 8  # `swapped`: how many following examples are tried for one of the same grid


# ----------------------------------------------------------------------------- parameters
def restore_params(directory: str, step: int | None, abstract, shardings):
    """The `params` of a train-state checkpoint written by `training.checkpoint.Checkpointer`
    (optimizer state, RNG and data position are not read), placed on `shardings`."""
    manager = ocp.CheckpointManager(
        os.path.expanduser(directory),
        item_names=("state", "data"),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
    )
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"config.checkpoint_dir={directory}: no complete checkpoint")
        meta = manager.item_metadata(step)["state"]
        saved = getattr(meta, "tree", meta)["params"]
        if ("lora" in saved) != ("lora" in abstract):
            raise ValueError(
                f"config.checkpoint_dir={directory} step {step}: the checkpoint "
                f"{'has' if 'lora' in saved else 'has no'} LoRA adapters but config.lora.enabled="
                f"{'lora' in abstract}; use the training stage's lora settings"
            )
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
        item = {"params": target}
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=item,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                    partial_restore=True,
                )
            ),
        )
    finally:
        manager.close()
    return out["state"]["params"], step


def eval_params(run: Session) -> tuple[Any, str]:
    """The parameters to evaluate (see the module docstring; LoRA adapters stay: the policy
    folds them in) and where they came from."""
    config = run.config
    shardings = run.param_shardings()
    if config.get("checkpoint_dir"):
        step = config.get("checkpoint_step")
        step = None if step is None or step < 0 else step
        params, step = restore_params(config.checkpoint_dir, step, run.abstract_params, shardings)
        return params, f"{config.checkpoint_dir}@{step}"
    if config.get("init_from"):
        params = load_params(
            config.init_from,
            run.model_config,
            dtype=run.model_config.param_dtype,
            shardings=base_params(shardings),
        )
        return params, config.init_from
    _log.warning("eval: no checkpoint_dir or init_from; evaluating random initial weights")
    return run.initial_params(), "random init"


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class EvalData:
    """Records of the evaluated split and how to turn one into an RL-mode (prompt) sample.

    sample: `(record, num_frames or None) -> build_sample(..., mode="rl")` dict; None keeps the
      dataset's own frame sampling, a count re-samples the video (sparse-to-dense).
    example: `record -> Example` (without decoding anything).
    """

    records: Sequence[Any]
    sample: Callable[[Any, int | None], dict[str, Any]]
    example: Callable[[Any], Any]
    tokenizer: Any
    model_config: Any


def _synthetic_data(run: Session, split: str) -> EvalData:
    tok, cfg = run.data.tokenizer, run.model_config

    def sample(record, num_frames):
        frames, idx = record.frames, None
        if num_frames and num_frames != len(frames):  # uniform re-sampling of the clip
            idx = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
            frames = frames[idx]
        visual = frames_visual(  # rendered size: boxes stay in pixels
            frames,
            record.fps,
            cfg.model_type,
            ordinals=idx,
            total=len(record.frames),
            vision=cfg.vision,
        )
        example = dataclasses.replace(record.example, video=f"synthetic/{record.example.id}")
        return build_sample(example, tok, cfg, mode="rl", visual=visual, think=run.data.think)

    return EvalData(run.data.split(split), sample, lambda r: r.example, tok, cfg)


def _example_data(records, tok, cfg, base: VisionOptions) -> EvalData:
    """`Example` records whose videos are decoded from files (PyAV) by `build_sample`."""

    def sample(example, num_frames):
        opts = dataclasses.replace(base, nframes=num_frames) if num_frames else base
        return build_sample(example, tok, cfg, mode="rl", options=opts)

    return EvalData(records, sample, lambda ex: ex, tok, cfg)


def _file_data(run: Session, e: ml_collections.ConfigDict) -> EvalData:
    config = run.config
    tok_dir = config.data.get("tokenizer") or config.get("init_from")
    if not tok_dir:
        raise ValueError(
            "config.eval.annotations needs a tokenizer: set config.data.tokenizer or init_from"
        )
    tok = load_tokenizer(tok_dir)
    cfg = run.model_config.replace(**tok.model_token_ids())
    records = read_examples(e.annotations, e.get("format") or None, e.get("media_root") or None)
    base = VisionOptions(
        fps=e.fps,
        nframes=e.num_frames or None,
        max_pixels=e.max_pixels or None,
        total_pixels=e.total_pixels or None,
    )
    return _example_data(records, tok, cfg, base)


def eval_data(run: Session) -> EvalData:
    """The evaluated records: `config.eval.annotations`, else split `config.eval.split` of the
    run's prepared data (synthetic, or an annotation source with its vision options)."""
    e = run.config.eval
    if e.get("annotations"):
        return _file_data(run, e)
    if run.data is None:
        raise ValueError(
            "eval: no dataset; set config.eval.annotations (an annotation file) or "
            f"config.data.source to a prepared source (got {run.config.data.source!r})"
        )
    if run.config.data.source == "synthetic":
        return _synthetic_data(run, e.split)
    vision = run.data.vision  # an annotation source (data.annotation_data)
    if e.num_frames:
        vision = dataclasses.replace(vision, nframes=e.num_frames)
    return _example_data(run.data.split(e.split), run.data.tokenizer, run.model_config, vision)


def prompt_batch(
    samples: Sequence[dict], data: EvalData, patch_multiple: int, layout: str = "rows"
) -> dict[str, Any]:
    """Left-padded prompts (`layout` "rows" or "flat"), length rounded up to 64 to bound
    compiles."""
    length = round_up(max(int(s["num_tokens"]) for s in samples), 64)
    return collate_rows(
        [[s] for s in samples],
        data.model_config,
        length=length,
        pad_id=data.tokenizer.pad_id,
        left_pad=True,
        visual_layout=layout,
        patch_multiple=patch_multiple,
    )


# ----------------------------------------------------------------------------- strategies
def make_strategy(e: ml_collections.ConfigDict):
    """The `tts` strategy named by `e.strategy` with its settings from `config.eval`."""
    name = e.strategy
    if name == "self_consistency":
        return tts.SelfConsistency(n=e.num_samples)
    if name == "adaptive_consistency":
        return tts.AdaptiveConsistency(
            round_size=e.round_size,
            max_samples=e.num_samples,
            stopping=e.stopping,
            threshold=e.threshold,
            margin=e.margin,
        )
    if name == "beam_search":
        return tts.BeamSearchStrategy(width=e.beam_width, alpha=e.length_alpha)
    if name == "best_of_n":
        scorer = tts.MeanLogProb() if e.scorer == "mean_logprob" else tts.RewardScorer(e.scorer)
        return tts.BestOfN(n=e.num_samples, scorer=scorer)
    if name == "sparse_to_dense":
        return tts.SparseToDense(
            frames=tuple(e.frame_levels), n=e.num_samples, agreement=e.agreement
        )
    raise ValueError(f"config.eval.strategy={name!r} is not one of {list(STRATEGY_NAMES)}")


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


def _greedy(
    run, policy: Policy, data: EvalData, n: int, e, ablation: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Greedy records of the first `n` examples, their visual input ablated as `ablation`
    (`data.visual_ablations`) when given; returns (records, skip reasons) — an example the
    ablation does not apply to is skipped and counted, never scored as something else."""
    tok = data.tokenizer
    sampler = Sampler(policy.model, max_new_tokens=e.max_new_tokens, **tok.generation_kwargs())
    generate = greedy_generate(sampler, policy, tok.decode)
    frames = e.num_frames or None
    skipped: list[str] = []

    def ablated(j, sample):
        rng = np.random.default_rng([run.config.seed, j])
        if ablation != "swapped":
            return ablate(sample, ablation, rng)
        for step in range(1, min(n, SWAP_TRIES + 1)):  # the next example with the same grid
            other = data.sample(data.records[(j + step) % n], frames)
            try:
                return ablate(sample, ablation, rng, other=other)
            except CannotAblate:
                continue
        raise CannotAblate(f"{sample['id']}: no other video or image of its grid to swap in")

    def batches():
        for i in range(0, n, e.batch_size):  # records are read (decoded) batch by batch
            chunk = []
            for j in range(i, min(i + e.batch_size, n)):
                sample = data.sample(data.records[j], frames)
                if ablation:
                    try:
                        sample = ablated(j, sample)
                    except CannotAblate as err:
                        skipped.append(str(err))
                        continue
                chunk.append(sample)
            if chunk:
                yield prompt_batch(chunk, data, e.patch_multiple)

    label = run.config.stage + (f" ({ablation})" if ablation else "")
    out, _ = evaluate(generate, batches(), limit=n, progress=label, reward=e.reward)
    for r in out:
        r["samples"] = 1
    return out, skipped


def _ablations(run, policy, data, n, e, preds, real: dict[str, Any]):
    """The same model with its visual input ablated: accuracy (with its interval) and per
    family for each `e.ablations`, the paired bootstrap of real minus ablated on the same
    questions (`vs_real`), and the visual reliance acc(real) - acc(blank) per family; and
    each ablation's predictions by kind."""
    out: dict[str, Any] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    real_scores = scores_by_id(preds)
    for kind in e.ablations:
        records, skipped = _greedy(run, policy, data, n, e, ablation=kind)
        predictions[kind] = records
        summary = summarize(records)
        out[kind] = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
        out[kind]["skipped"] = len(skipped)
        out[kind]["vs_real"] = paired_bootstrap(real_scores, scores_by_id(records))
        if skipped:
            _log.warning("%s: %d skipped, e.g. %s", kind, len(skipped), skipped[0])
    if "blank" in out:
        blank = out["blank"]
        out["visual_reliance"] = {
            "overall": real["accuracy"] - blank["accuracy"],
            **{
                c: real["by_category"][c] - v
                for c, v in blank.get("by_category", {}).items()
                if c in real["by_category"]
            },
        }
    return out, predictions


def _priors(run, data: EvalData, n: int, e) -> dict[str, Any]:
    """Text-only priors fitted on the training split, answering the evaluated examples."""
    if e.get("annotations") or run.data is None:
        return {"skipped": "no training split to fit priors on (config.eval.annotations)"}
    train = [data.example(r) for r in run.data.split("train")]
    priors = fit_priors(train, e.reward)
    examples = [data.example(data.records[i]) for i in range(n)]
    records = prior_records(priors, examples, lambda text, ex: score(text, ex, e.reward))
    summary = summarize(records)
    return {
        **{k: summary[k] for k in SUMMARY_KEYS if k in summary},
        "rules": {name: p.rule for name, p in priors.items()},
        "fitted_on": f"train ({len(train)} examples)",
    }


def _scaled(policy: Policy, data: EvalData, n: int, e, seed) -> list[dict[str, Any]]:
    tok = data.tokenizer
    strategy = make_strategy(e)
    generator = tts.ModelGenerator(
        policy,
        tok.decode,
        max_new_tokens=e.max_new_tokens,
        method=TopP(temperature=e.temperature, p=e.top_p),
        **tok.generation_kwargs(),
    )
    examples = [data.example(data.records[i]) for i in range(n)]

    def prompt_of(i):  # read when asked; num_frames 0: the dataset's own frame sampling
        return lambda f: flat_prompt_inputs(
            prompt_batch([data.sample(data.records[i], f or None)], data, 4, layout="flat")
        )

    lenient = e.reward == "accuracy_lenient"  # votes read answers the way the score does
    questions = [
        tts.Question(ex.to_reward_example(), prompt_of(i), e.num_frames or 0, lenient=lenient)
        for i, ex in enumerate(examples)
    ]
    reward = functools.partial(reward_score, e.reward)  # each budget scored as `score` does
    results = tts.evaluate(
        [strategy],
        questions,
        generator,
        jax.random.key(seed),
        score=reward,
        batch_size=e.questions_per_call,
        progress=True,
    )
    out = []
    for ex, res in zip(examples, results[strategy.name], strict=True):
        out.append(
            {
                "id": ex.id,
                "category": ex.category or ex.problem_type,
                "problem_type": ex.problem_type,
                "answer": ex.answer,
                "completion": res.completion,
                # tokens decoded per sample (the chosen completion's own ids are not kept)
                "length": res.spent.tokens / max(1, res.spent.samples),
                "chosen": _jsonable(res.answer),
                "samples": res.spent.samples,
                "spent": res.spent.as_dict(),
                "info": _jsonable(dict(res.info)),
                "by_budget": {
                    str(k): {"score": r.score, **r.spent.as_dict()}
                    for k, r in sorted(res.at_budget.items())
                },
                **score(res.completion, ex, e.reward),
            }
        )
    return out


def scaling_curve(preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy (with its 95% bootstrap interval) against mean samples and tokens per question,
    one row per budget: each smaller budget of the strategy (`Result.at_budget`, on the same
    samples), then its own run (`budget` None)."""
    budgets = sorted({int(k) for p in preds for k in p.get("by_budget", {})})
    rows = []
    for budget in [*budgets, None]:
        at = [p if budget is None else p["by_budget"].get(str(budget)) for p in preds]
        if any(a is None for a in at):
            raise ValueError(f"budget {budget}: missing from some predictions' by_budget")
        spent = [a["spent"] if budget is None else a for a in at]
        scores = [float(a["score"]) for a in at]
        rows.append(
            {
                "budget": budget,
                "samples": float(np.mean([c["samples"] for c in spent])),
                "tokens": float(np.mean([c["tokens"] for c in spent])),
                "accuracy": float(np.mean(scores)),
                "accuracy_ci": list(bootstrap_ci(scores)),
            }
        )
    return rows


# ----------------------------------------------------------------------------- the job
def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs the evaluation described in the module docstring; returns the stage's figures."""
    e = config.eval
    if e.strategy not in STRATEGY_NAMES:
        raise ValueError(f"config.eval.strategy={e.strategy!r} is not one of {STRATEGY_NAMES}")
    run = Session(config, workdir)
    params, origin = eval_params(run)
    data = eval_data(run)
    model = run.model if data.model_config == run.model_config else Qwen2_5_VL(data.model_config)
    policy = run.policy.replace(model=model).with_params(params)
    n = min(e.num_examples or len(data.records), len(data.records))
    start = time.perf_counter()
    if e.strategy == "greedy":
        preds, _ = _greedy(run, policy, data, n, e)
        strategy_name = "greedy"
    else:
        preds = _scaled(policy, data, n, e, config.seed)
        strategy_name = make_strategy(e).name
    seconds = time.perf_counter() - start
    summary = summarize(preds)
    # wall time of the model's own predictions (data reading and compilation included)
    summary["speed"] = {"seconds": seconds, "questions_per_s": n / max(seconds, 1e-9)}
    if e.priors:
        summary["prior"] = _priors(run, data, n, e)
    ablated: dict[str, list[dict[str, Any]]] = {}  # kind -> predictions
    if e.strategy == "greedy" and e.ablations:
        summary["ablations"], ablated = _ablations(run, policy, data, n, e, preds, summary)
    if preds and "spent" in preds[0]:
        summary["compute_per_question"] = {
            k: float(np.mean([p["spent"][k] for p in preds])) for k in preds[0]["spent"]
        }
        summary["scaling"] = scaling_curve(preds)
    figures = {
        "model": origin,
        "dataset": e.get("annotations") or f"{config.data.source}:{e.split}",
        "strategy": strategy_name,
        **summary,
    }
    if jax.process_index() == 0:
        write_predictions(os.path.join(workdir, f"predictions_{config.stage}.jsonl"), preds)
        for kind, records in ablated.items():
            name = f"predictions_{config.stage}@{kind}.jsonl"
            write_predictions(os.path.join(workdir, name), records)
        path = write_stage_results(workdir, config.stage, figures)
        with open(path) as f:
            stages = json.load(f)["stages"]
        evaluated = {k: v for k, v in stages.items() if "by_category" in v}
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(markdown_table(evaluated) + "\n")
    print(json.dumps({config.stage: figures}, indent=2, default=str))
    return figures
