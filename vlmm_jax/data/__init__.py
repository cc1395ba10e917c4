"""vlmm_jax.data."""

from vlmm_jax.data.chat import (
    SYSTEM_PROMPT,
    VisionOptions,
    build_sample,
    example_messages,
    load_visual,
    num_visual_tokens,
    render_chat,
    sample_positions,
    sft_response,
    tokenize_chat,
)
from vlmm_jax.data.formats import FORMATS, ExampleReader, detect_format, read_examples
from vlmm_jax.data.packing import collate_rows, collate_visual
from vlmm_jax.data.pipeline import (
    BatchDataset,
    BatchOptions,
    SampleBuilder,
    batch_arrays,
    make_pipeline,
    source_dataset,
)
from vlmm_jax.data.records import (
    PROBLEM_TYPES,
    AnnotationError,
    Example,
    ReadStats,
)
from vlmm_jax.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from vlmm_jax.data.video import load_video, smart_nframes
from vlmm_jax.data.vision_processing import (
    process_images,
    process_video,
    resize_bicubic,
    smart_resize,
)

__all__ = [
    "FORMATS",
    "PROBLEM_TYPES",
    "SYSTEM_PROMPT",
    "AnnotationError",
    "BatchDataset",
    "BatchOptions",
    "Example",
    "ExampleReader",
    "ReadStats",
    "SampleBuilder",
    "Tokenizer",
    "VisionOptions",
    "batch_arrays",
    "build_sample",
    "collate_rows",
    "collate_visual",
    "detect_format",
    "example_messages",
    "load_tokenizer",
    "load_video",
    "load_visual",
    "make_pipeline",
    "num_visual_tokens",
    "process_images",
    "process_video",
    "read_examples",
    "render_chat",
    "resize_bicubic",
    "sample_positions",
    "sft_response",
    "smart_nframes",
    "smart_resize",
    "source_dataset",
    "tokenize_chat",
    "train_tokenizer",
]
