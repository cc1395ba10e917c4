"""vlmm_jax.data."""

from vlmm_jax.data.formats import FORMATS, ExampleReader, detect_format, read_examples
from vlmm_jax.data.records import (
    PROBLEM_TYPES,
    AnnotationError,
    Example,
    ReadStats,
)
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
    "AnnotationError",
    "Example",
    "ExampleReader",
    "ReadStats",
    "detect_format",
    "load_video",
    "process_images",
    "process_video",
    "read_examples",
    "resize_bicubic",
    "smart_nframes",
    "smart_resize",
]
