"""Tokenizers: a checkpoint's Hugging Face `tokenizer.json`, or a small one trained here.

Qwen2.5-VL's tokenizer is a byte-level BPE whose special tokens follow the learned vocabulary
(`<|endoftext|>` = 151643, `<|im_start|>` = 151644, ..., `<|video_pad|>` = 151656). The
tokenizer trained by `train_tokenizer` has the same pre-tokenizer, the same added tokens in the
same order (appended after its own, much smaller, vocabulary) and the same chat template, so the
chat format and every code path are identical; only the ids differ, and the model config takes
them from `Tokenizer.model_token_ids()`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

# Qwen2.5-VL's added tokens in id order (151643 ...), and whether each is "special" (skipped
# when decoding with skip_special_tokens), as in its tokenizer_config.json `added_tokens_decoder`.
# Qwen2.5-VL has no <think> token: reasoning tags are ordinary text.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
# The ones the chat format and the model need; a tokenizer.json without them is rejected.
REQUIRED_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2's pre-tokenizer split (tokenizer.json `pre_tokenizer.pretokenizers[0].pattern.Regex`).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5-VL's chat template (tokenizer_config.json / chat_template.json `chat_template`),
# written into the directory `train_tokenizer` saves so transformers renders the same format.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3-VL's template is long (tools, tool calls): kept verbatim as the checkpoints ship it.
_TEMPLATES = Path(__file__).parent / "templates"


def chat_template(model_type: str = "qwen2_5_vl") -> str:
    """The chat template of a family's published Instruct checkpoints (`chat_template`):
    Qwen2.5-VL's, or Qwen3-VL-8B-Instruct's (`templates/qwen3_vl.jinja`, byte for byte)."""
    if model_type == "qwen2_5_vl":
        return QWEN2_5_VL_CHAT_TEMPLATE
    if model_type == "qwen3_vl":
        return (_TEMPLATES / "qwen3_vl.jinja").read_text(encoding="utf-8")
    raise ValueError(f"chat_template: no template for model_type {model_type!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class Tokenizer:
    """A `tokenizers.Tokenizer` plus the ids of the Qwen chat and vision tokens.

    Picklable (grain worker processes receive it). Attributes:
      backend: the `tokenizers.Tokenizer`.
      path: where it was read from / written to ("" if in memory only).
    """

    backend: tokenizers.Tokenizer
    path: str = ""

    def __post_init__(self):
        missing = [t for t in REQUIRED_TOKENS if self.backend.token_to_id(t) is None]
        if missing:
            raise ValueError(
                f"{self.path or 'tokenizer'}: missing the Qwen2.5-VL special tokens {missing}; "
                f"expected all of {list(REQUIRED_TOKENS)} among its added tokens"
            )

    # ------------------------------------------------------------------ ids
    def token_id(self, token: str) -> int:
        """The id of `token` (one vocabulary entry); KeyError naming the tokenizer if absent."""
        i = self.backend.token_to_id(token)
        if i is None:
            raise KeyError(f"{self.path or 'tokenizer'}: no token {token!r}")
        return i

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the model's vocab must be at least this)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def im_start_id(self) -> int:
        return self.token_id("<|im_start|>")

    @property
    def im_end_id(self) -> int:
        """End of a turn: the instruct models' EOS."""
        return self.token_id("<|im_end|>")

    @property
    def eos_id(self) -> int:
        return self.im_end_id

    @property
    def eos_ids(self) -> tuple[int, int]:
        """Every id that ends a generation: `<|im_end|>` and `<|endoftext|>`, as the Qwen2.5-VL
        checkpoints' `generation_config.json` lists them."""
        return (self.im_end_id, self.token_id("<|endoftext|>"))

    @property
    def pad_id(self) -> int:
        """`<|endoftext|>`, Qwen's pad token."""
        return self.token_id("<|endoftext|>")

    @property
    def vision_start_id(self) -> int:
        return self.token_id("<|vision_start|>")

    @property
    def vision_end_id(self) -> int:
        return self.token_id("<|vision_end|>")

    @property
    def image_pad_id(self) -> int:
        return self.token_id("<|image_pad|>")

    @property
    def video_pad_id(self) -> int:
        return self.token_id("<|video_pad|>")

    @property
    def vision_token_ids(self) -> tuple[int, ...]:
        """The vision markers and placeholders: a generated completion never contains them."""
        return (self.vision_start_id, self.vision_end_id, self.image_pad_id, self.video_pad_id)

    def generation_kwargs(self) -> dict[str, Any]:
        """`Sampler` / `BeamSearch` keyword arguments for this tokenizer: stop at its EOS, pad
        with its pad id, never generate vision markers or placeholders."""
        return {
            "eos_ids": self.eos_ids,
            "pad_id": self.pad_id,
            "suppress_ids": self.vision_token_ids,
        }

    def model_token_ids(self) -> dict[str, int]:
        """Keyword arguments for `ModelConfig.replace` that match this tokenizer's ids."""
        return {
            "image_token_id": self.image_pad_id,
            "video_token_id": self.video_pad_id,
            "vision_start_token_id": self.vision_start_id,
            "vision_end_token_id": self.vision_end_id,
            "eos_token_id": self.eos_id,
            "pad_token_id": self.pad_id,
        }

    # ------------------------------------------------------------------ text
    def encode(self, text: str) -> np.ndarray:
        """Token ids `int32 [L]` of `text` (special tokens in the text are recognised)."""
        return np.asarray(self.backend.encode(text, add_special_tokens=False).ids, np.int32)

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids `int32 [L]` and character spans `int64 [L, 2]` (start, end) into `text`."""
        enc = self.backend.encode(text, add_special_tokens=False)
        offsets = np.asarray(enc.offsets, np.int64).reshape(-1, 2)
        return np.asarray(enc.ids, np.int32), offsets

    def decode(self, ids: Sequence[int] | np.ndarray, *, skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special tokens (`<|im_end|>`, pads, ...) dropped unless asked."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def save(self, path: str | os.PathLike, model_type: str = "qwen2_5_vl") -> str:
        """Writes `tokenizer.json` and a transformers-readable `tokenizer_config.json` (with the
        family's `chat_template`) into the directory `path`; returns the directory."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(out / "tokenizer.json"))
        decoder = {}
        for content, special in ADDED_TOKENS:
            i = self.backend.token_to_id(content)
            if i is not None:
                decoder[str(i)] = {
                    "content": content,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": special,
                }
        config = {
            "tokenizer_class": "Qwen2Tokenizer",
            "added_tokens_decoder": decoder,
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "errors": "replace",
            "clean_up_tokenization_spaces": False,
            "split_special_tokens": False,
            "model_max_length": 131072,
            "chat_template": chat_template(model_type),
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        return str(out)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Reads a Hugging Face `tokenizer.json`.

    Args:
      path: a checkpoint directory holding `tokenizer.json`, or the file itself.

    Raises:
      FileNotFoundError: no `tokenizer.json` there.
      ValueError: the file is not a valid tokenizer, or lacks the Qwen2.5-VL special tokens;
        the message names the file.
    """
    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        where = f"directory {p} has no tokenizer.json" if p.is_dir() else f"no file {p}"
        raise FileNotFoundError(
            f"load_tokenizer: {where}; expected a Hugging Face tokenizer.json (a Qwen2.5-VL "
            "checkpoint directory, or one written by vlmm_jax.data.train_tokenizer)"
        )
    try:
        backend = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON / schema
        raise ValueError(f"load_tokenizer: {file}: not a valid tokenizer.json ({e})") from e
    return Tokenizer(backend, str(file))


def _chat_corpus() -> list[str]:
    """The fixed strings of the chat format and prompts, so they get short encodings."""
    from vlmm_jax.data import records  # late: records is light, but keep the import local

    texts = ["system\nYou are a helpful assistant.", "user\n", "assistant\n", "<think>", "</think>"]
    texts += ["<answer>", "</answer>", "Options:\n", records.THINK_INSTRUCTION]
    texts += list(records.TYPE_INSTRUCTIONS.values())
    return texts


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    path: str | os.PathLike | None = None,
    *,
    min_frequency: int = 2,
    model_type: str = "qwen2_5_vl",
) -> Tokenizer:
    """Trains a byte-level BPE with Qwen2's pre-tokenizer and Qwen2.5-VL's added tokens.

    The 256 byte symbols are always in the vocabulary (any text encodes); the added tokens are
    appended after the learned vocabulary in Qwen's order. The fixed strings of the chat format
    and the prompt instructions are added to the corpus.

    Args:
      texts: training corpus (e.g. the questions and chains of thought of a dataset).
      vocab_size: total size including the 22 added tokens (the learned part may come out
        smaller on a small corpus); at least 256 + 22.
      path: if given, a directory to write `tokenizer.json` and `tokenizer_config.json` to.
      min_frequency: minimum pair count for a merge.
      model_type: whose chat template `tokenizer_config.json` carries (`chat_template`).

    Returns:
      the Tokenizer (`vocab_size` attribute: the actual size).
    """
    n_added = len(ADDED_TOKENS)
    n_bytes = len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < n_bytes + n_added:
        raise ValueError(
            f"train_tokenizer: vocab_size={vocab_size} is below the {n_bytes} byte symbols plus "
            f"{n_added} added tokens"
        )
    backend = tokenizers.Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    backend.normalizer = tokenizers.normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                tokenizers.Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_added,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus():
        for _ in range(8):  # weighted: every chat turn repeats these strings
            yield from _chat_corpus()
        yield from texts

    backend.train_from_iterator(corpus(), trainer=trainer)
    backend.add_special_tokens(
        [tokenizers.AddedToken(t, special=True, normalized=False) for t, s in ADDED_TOKENS if s]
    )
    backend.add_tokens(
        [
            tokenizers.AddedToken(t, special=False, normalized=False)
            for t, s in ADDED_TOKENS
            if not s
        ]
    )
    tok = Tokenizer(backend)
    if path is not None:
        directory = tok.save(path, model_type)
        tok = Tokenizer(backend, str(Path(directory) / "tokenizer.json"))
    return tok
