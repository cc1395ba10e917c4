"""The embedded synthetic video-reasoning dataset (see `builder.py` for the storage layout)."""

from vlmm_jax.data.synthetic.builder import (
    SPLITS,
    SyntheticConfig,
    SyntheticRecord,
    SyntheticSource,
    SyntheticVideo,
    build_from_config,
    build_synthetic,
    example_seed,
    generate_example,
    generate_problem,
    target_completion,
)
from vlmm_jax.data.synthetic.render import (
    COLORS,
    SHAPES,
    Scene,
    Track,
    render_indexed,
    render_video,
)
from vlmm_jax.data.synthetic.scene import DIFFICULTIES, Difficulty
from vlmm_jax.data.synthetic.tasks import ORDER_TASKS, TASKS, Problem

__all__ = [
    "COLORS",
    "DIFFICULTIES",
    "ORDER_TASKS",
    "SHAPES",
    "SPLITS",
    "TASKS",
    "Difficulty",
    "Problem",
    "Scene",
    "SyntheticConfig",
    "SyntheticRecord",
    "SyntheticSource",
    "SyntheticVideo",
    "Track",
    "build_from_config",
    "build_synthetic",
    "example_seed",
    "generate_example",
    "generate_problem",
    "render_indexed",
    "render_video",
    "target_completion",
]
