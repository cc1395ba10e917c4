"""Tokenizer: a tiny byte-level BPE trained here, checked against transformers' own loader."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from vlmm_jax.data.tokenizer import (
    ADDED_TOKENS,
    REQUIRED_TOKENS,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)

CORPUS = [
    "A red circle moves from the left to the right of the frame.",
    "How many times does the blue square appear? Count the events.",
    "The green triangle is visible from 1.5 to 3.0 seconds.",
] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(CORPUS, 400, tmp_path_factory.mktemp("tok"))


def test_generation_stops_at_both_qwen_eos_ids(tok):
    """Qwen2.5-VL's generation_config.json: eos_token_id [151645, 151643] (im_end, endoftext)."""
    kw = tok.generation_kwargs()
    assert kw["eos_ids"] == (tok.token_id("<|im_end|>"), tok.token_id("<|endoftext|>"))
    assert kw["pad_id"] == tok.token_id("<|endoftext|>")


def test_added_tokens_follow_the_vocabulary_in_qwen_order(tok):
    ids = [tok.token_id(t) for t, _ in ADDED_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(ADDED_TOKENS)))  # as 151643 ... 151664
    assert ids[-1] == tok.vocab_size - 1 and tok.vocab_size <= 400
    assert (tok.pad_id, tok.im_start_id, tok.eos_id) == (ids[0], ids[0] + 1, ids[0] + 2)
    assert tok.model_token_ids() == {
        "image_token_id": ids[0] + 12,
        "video_token_id": ids[0] + 13,
        "vision_start_token_id": ids[0] + 9,
        "vision_end_token_id": ids[0] + 10,
        "eos_token_id": ids[0] + 2,
        "pad_token_id": ids[0],
    }


def test_encode_decode_round_trip(tok):
    text = "<|im_start|>user\nWhere is the red circle at t=2.5s? Ünïcode ✓<|im_end|>\n"
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.decode(ids) == "user\nWhere is the red circle at t=2.5s? Ünïcode ✓\n"
    assert list(tok.encode("<|video_pad|><|video_pad|>")) == [tok.video_pad_id] * 2
    # The chat-format strings are in the corpus: they get merges.
    assert len(tok.encode("assistant")) < len("assistant")
    ids, offsets = tok.encode_with_offsets("ab<|im_end|>")
    assert offsets.shape == (len(ids), 2) and offsets[-1].tolist() == [2, 12]


def test_save_load_pickle(tok, tmp_path):
    again = load_tokenizer(tok.path)
    text = "The blue square appears 3 times."
    assert list(again.encode(text)) == list(tok.encode(text))
    d = tok.save(tmp_path / "copy")
    assert list(load_tokenizer(d).encode(text)) == list(tok.encode(text))
    clone = pickle.loads(pickle.dumps(tok))  # grain workers receive it pickled
    assert list(clone.encode(text)) == list(tok.encode(text))


def test_transformers_reads_the_saved_directory_identically(tok):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tok.path).rsplit("/", 1)[0])
    text = "<|im_start|>assistant\n<think>The circle moves left.</think><|im_end|>\n"
    assert hf.encode(text) == list(tok.encode(text))
    assert hf.convert_tokens_to_ids("<|video_pad|>") == tok.video_pad_id
    assert hf.eos_token == "<|im_end|>" and hf.pad_token == "<|endoftext|>"


def test_missing_and_invalid_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no file"):
        load_tokenizer(tmp_path / "nope" / "tokenizer.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path)
    bad.write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        load_tokenizer(bad)


def test_tokenizer_without_qwen_special_tokens_is_rejected(tok, tmp_path):
    import tokenizers

    plain = tokenizers.Tokenizer(tokenizers.models.BPE())
    plain.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    plain.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="missing the Qwen2.5-VL special tokens") as e:
        load_tokenizer(tmp_path)
    assert "<|video_pad|>" in str(e.value) and str(tmp_path) in str(e.value)
    assert set(REQUIRED_TOKENS) <= {t for t, _ in ADDED_TOKENS}
    with pytest.raises(KeyError, match="no token"):
        tok.token_id("<think>")  # Qwen2.5-VL has no <think> token: it is text
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer(CORPUS, 100)
    assert isinstance(tok, Tokenizer)
