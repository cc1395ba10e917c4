"""The embedded synthetic dataset as trainer input: build it, train its tokenizer, batch it.

Shared by the SFT, GRPO and evaluation jobs: `prepare(config, workdir)` builds the dataset
(skipped when already built) and the tokenizer (trained once on the train split's texts, saved
under the workdir), and returns them with the model config adapted to the tokenizer's ids.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from vlmm_jax.data.chat import build_sample, sft_response
from vlmm_jax.data.processors import frames_visual
from vlmm_jax.data.synthetic import TASKS, SyntheticSource, build_synthetic
from vlmm_jax.data.synthetic.perception import perception_example
from vlmm_jax.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from vlmm_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class SyntheticData:
    path: str  # the built dataset (pass to SyntheticSource)
    tokenizer: Tokenizer
    model_config: ModelConfig  # vocabulary and special ids set from the tokenizer
    think: bool = True  # prompts ask for <think> reasoning and SFT targets hold the CoT
    target: str = "task"  # "task": each example's question; "perception": `perception.describe`

    def split(self, name: str) -> SyntheticSource:
        return SyntheticSource(self.path, name)


def build(data: ml_collections.ConfigDict) -> str:
    s = data.synthetic
    return build_synthetic(
        os.path.expanduser(data.dir),
        num_train=s.num_train,
        num_val=s.num_val,
        num_test=s.num_test,
        seed=s.seed,
        frames=s.frames,
        size=s.size,
        fps=s.fps,
        difficulty=s.difficulty,
        tasks=tuple(s.get("tasks") or TASKS),
    )


TARGETS = ("task", "perception")


def as_target(record, target: str):
    """The `Example` of `record` for `target`: its own question, or the dense perception one."""
    if target == "task":
        return record.example
    if target == "perception":
        size = record.frames.shape[1:3]
        return perception_example(record.example, record.tracks, record.fps, size)
    raise ValueError(f"data.synthetic.target={target!r}; expected one of {TARGETS}")


def corpus(source: SyntheticSource, limit: int) -> list[str]:
    """Questions, options and target completions (task and perception) of the first `limit`
    examples: one tokenizer serves the alignment stage and the later ones."""
    texts = []
    for i in range(min(limit, len(source))):
        record = source[i]
        ex = record.example
        texts += [ex.prompt(think=True), sft_response(ex), *ex.options]
        seen = as_target(record, "perception")
        texts += [seen.prompt(think=False), sft_response(seen)]
    return texts


def prepare(config: ml_collections.ConfigDict, model_config: ModelConfig, workdir: str):
    """Builds (or finds) the dataset and tokenizer; returns `SyntheticData`."""
    path = build(config.data)
    tok_dir = config.data.get("tokenizer") or os.path.join(workdir, "tokenizer")
    if os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        tok = load_tokenizer(tok_dir)
    else:
        texts = corpus(SyntheticSource(path, "train"), config.data.tokenizer_corpus)
        tok = train_tokenizer(texts, config.data.vocab_size, tok_dir)
    vocab = -(-tok.vocab_size // 128) * 128  # a multiple of 128: shards evenly
    text = dataclasses.replace(model_config.text, vocab_size=vocab)
    model_config = model_config.replace(text=text, **tok.model_token_ids())
    s = config.data.synthetic
    target = s.get("target", "task")
    if target not in TARGETS:
        raise ValueError(f"config.data.synthetic.target={target!r}; expected one of {TARGETS}")
    think = bool(s.get("think", True)) and target == "task"  # perception: answer only
    return SyntheticData(
        path=path, tokenizer=tok, model_config=model_config, think=think, target=target
    )


class SyntheticSample:
    """`SyntheticRecord -> model-ready sample` (picklable, for grain workers).

    Frames are kept at their rendered size (`min_pixels = max_pixels = H * W`), so boxes in
    the answers stay in pixel coordinates of what the model sees.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        config: ModelConfig,
        mode: str = "sft",
        think: bool = True,
        target: str = "task",
    ):
        self.tokenizer, self.config, self.mode = tokenizer, config, mode
        self.think, self.target = think, target

    def visual(self, record, frames=None) -> dict[str, np.ndarray]:
        frames = record.frames if frames is None else frames
        return frames_visual(frames, record.fps, self.config.model_type, vision=self.config.vision)

    def __call__(self, record):
        # The frames travel with the record; the example names them so the prompt holds a video.
        example = as_target(record, self.target)
        example = dataclasses.replace(example, video=f"synthetic/{example.id}")
        if not self.think:
            example = dataclasses.replace(example, chain_of_thought=None)
        return build_sample(
            example,
            self.tokenizer,
            self.config,
            mode=self.mode,
            visual=self.visual(record),
            think=self.think,
        )
