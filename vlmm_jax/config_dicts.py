"""The boundary between `ml_collections` recipe configs and the frozen model dataclasses.

A recipe's `config.model` holds every decoder field (`num_layers`, `hidden_size`, ...) at its top
level, the vision tower's under `config.model.vision`, and the run-time switches (`dtype`,
`scan_layers`, ...), all filled from a named preset, so command-line overrides such as
`--config.model.num_layers=2` are type-checked by `ml_collections`.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from vlmm_jax.models.config import PRESETS, ModelConfig, TextConfig, VisionConfig

_RUNTIME = (
    "model_type",  # the family (architecture, not a run-time switch; kept beside them here)
    "dtype",
    "param_dtype",
    "scan_layers",
    "remat_policy",
    "attention_implementation",
    "vision_position_advance",
)
_TOKENS = (
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "eos_token_id",
    "pad_token_id",
)


def _fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def model_config_dict(preset: str, **overrides) -> ml_collections.ConfigDict:
    """`config.model` for a recipe: the fields of `PRESETS[preset]()`, then `overrides`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset]()
    flat = {k: v for k, v in _fields(base.text).items() if v is not None}
    flat["head_dim"] = base.text.resolved_head_dim
    flat.update({k: getattr(base, k) for k in _RUNTIME + _TOKENS if getattr(base, k) is not None})
    flat["vision"] = _fields(base.vision)
    flat["preset"] = preset
    cd = ml_collections.ConfigDict(flat)
    cd.update(overrides)
    return cd


def build_model_config(cd: ml_collections.ConfigDict) -> ModelConfig:
    """The `ModelConfig` described by a `config.model` ConfigDict (unknown keys are errors)."""
    d = cd.to_dict()
    d.pop("preset", None)
    vision = d.pop("vision", {})
    text_names = {f.name for f in dataclasses.fields(TextConfig)}
    vision_names = {f.name for f in dataclasses.fields(VisionConfig)}
    allowed = text_names | set(_RUNTIME) | set(_TOKENS)
    unknown = sorted(set(d) - allowed) + [f"vision.{k}" for k in sorted(set(vision) - vision_names)]
    if unknown:
        raise ValueError(f"config.model: unknown field(s) {unknown}")
    tuples = {"mrope_section", "fullatt_block_indexes", "deepstack_visual_indexes"}
    text = TextConfig(
        **{k: tuple(v) if k in tuples else v for k, v in d.items() if k in text_names}
    )
    vis = VisionConfig(**{k: tuple(v) if k in tuples else v for k, v in vision.items()})
    rest = {k: v for k, v in d.items() if k in _RUNTIME or k in _TOKENS}
    return ModelConfig(text=text, vision=vis, **rest)


def optimizer_defaults(**overrides) -> ml_collections.ConfigDict:
    """A recipe's `config.optimizer` (see `training.optimizer.make_optimizer`) + `overrides`."""
    o = ml_collections.ConfigDict()
    o.learning_rate = 1e-3  # peak
    o.schedule = "cosine"  # cosine | linear | constant after warmup
    o.warmup_steps = 10
    o.total_steps = 100  # schedule length (normally train.steps)
    o.end_lr_ratio = 0.1  # final lr / peak (cosine, linear)
    o.max_grad_norm = 1.0  # global-norm clipping; 0 disables
    o.b1 = 0.9
    o.b2 = 0.95
    o.eps = 1e-8
    o.weight_decay = 0.01  # AdamW, matrices only
    o.freeze = ()  # parts to freeze: vision, merger, llm, embeddings, or regexes
    # part -> factor on the learning rate, first match wins (embeddings before llm), e.g.
    # --config.optimizer.lr_multipliers.vision=10 for a tower trained from scratch; a recipe
    # may add regexes over parameter paths as keys
    o.lr_multipliers = ml_collections.ConfigDict(
        {"embeddings": 1.0, "vision": 1.0, "merger": 1.0, "llm": 1.0}
    )
    o.update(overrides)
    return o


def sft_defaults(preset: str = "tiny") -> ml_collections.ConfigDict:
    """Every field an SFT recipe has, with a comment each; recipes override what they change."""
    from vlmm_jax.mesh import DEFAULT_RULES

    c = ml_collections.ConfigDict()
    c.job = "sft"  # vlmm_jax.main.JOBS entry
    c.stage = "sft"  # name in results.json and of the checkpoint folder
    c.seed = 0  # parameter init and the train state's RNG
    c.model = model_config_dict(preset)
    c.init_from = ""  # a Hugging Face checkpoint directory; empty: random init
    c.multihost = False  # jax.distributed.initialize() (also when JAX_COORDINATOR_ADDRESS is set)
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})  # -1: the rest
    c.logical_axis_rules = [list(r) for r in DEFAULT_RULES]  # logical name -> mesh axes

    c.data = ml_collections.ConfigDict()
    c.data.source = "random"  # vlmm_jax.training.data_sources.SOURCES entry
    c.data.batch_size = 8  # global rows per optimizer step
    c.data.micro_batches = 1  # gradient accumulation: micro-batches per step (GRPO: per rollout)
    c.data.seed = 0  # shuffling
    c.data.num_workers = 0  # grain worker processes decoding videos ahead of the step
    c.data.num_examples = 256  # random source: examples per epoch
    c.data.video_grid = (2, 4, 4)  # random source: (t, h, w) patch grid of each video

    c.optimizer = optimizer_defaults()

    c.lora = ml_collections.ConfigDict()
    c.lora.enabled = False  # train low-rank adapters only; the base model stays frozen
    c.lora.targets = r"^decoder/layers.*/(q|k|v|o|mlp/(gate|up|down))$"  # regex over param paths
    c.lora.rank = 8  # r: the adapters' inner size
    c.lora.alpha = 16.0  # the update is scaled by alpha / rank

    c.train = ml_collections.ConfigDict()
    c.train.steps = 100
    c.train.log_every = 1  # steps between metric lines
    c.train.eval_every = 50  # steps between evals on the validation split; 0 disables
    c.train.eval_batches = 2  # validation batches per eval
    c.train.train_on_prompt = False  # also learn prompt tokens (never visual placeholders)
    c.train.max_consecutive_nan = 5  # stop after this many skipped (non-finite) steps in a row
    # synthetic data: at the end, over this many validation examples, the loss per token class
    # (answer, visual words, numbers, template) with the real, blanked and swapped video, and a
    # linear probe of the vision tower's tokens (eval.token_loss, eval.vision_probe); 0: none
    c.train.visual_diagnostics = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 50  # steps between saves (and the last step)
    c.checkpoint.keep_last = 2
    c.checkpoint.best_metric = "eval_loss"  # also keep the best by this eval figure; "" disables
    c.checkpoint.best_mode = "min"
    c.checkpoint.keep_best = 1
    c.checkpoint.async_save = True

    c.export_hf_dir = ""  # write a Hugging Face checkpoint here at the end; empty: don't
    c.export_dtype = ""  # e.g. bfloat16; empty: the parameter dtype

    c.aot = ml_collections.ConfigDict()  # --config.job=aot: compile this recipe for a TPU slice
    c.aot.topology = "v5p-8"  # a Cloud TPU slice: v5p-8, v5p-64, v5e-8, v5e-16, v6e-8, ...
    c.aot.step_time = 0.0  # seconds per step measured on hardware, for the MFU; 0: not reported
    c.aot.compile = True  # False: lower only, report the arguments' per-chip bytes (no fit check)
    return c


def synthetic_data_defaults(c: ml_collections.ConfigDict) -> None:
    """Adds the embedded synthetic dataset's fields to `c.data` (source "synthetic")."""
    c.data.source = "synthetic"
    c.data.dir = "~/.cache/vlmm_jax/data"  # where the TFDS dataset is built (once per config)
    c.data.tokenizer = ""  # a tokenizer directory; empty: train one on the data (workdir/tokenizer)
    c.data.vocab_size = 1024  # of the trained tokenizer (the model's vocab is rounded up to 128)
    c.data.tokenizer_corpus = 2000  # train examples whose texts train the tokenizer
    c.data.max_length = 1024  # tokens per packed row
    c.data.packing = True  # several samples per row (segment ids keep them apart)
    c.data.synthetic = ml_collections.ConfigDict(
        dict(
            num_train=4000,  # examples per split
            num_val=400,
            num_test=400,
            seed=0,
            frames=16,  # rendered frames per video (8 temporal patches)
            size=112,  # frame side in pixels (8x8 merged tokens per temporal patch)
            fps=4.0,
            difficulty="medium",  # easy | medium | hard
            tasks=(),  # task families (data.synthetic.TASKS keys); empty: all of them
            think=True,  # <think> chain of thought in prompts and SFT targets; False: answer only
            target="task",  # task: each example's question; perception: dense object list (align)
        )
    )


def grpo_defaults(preset: str = "tiny") -> ml_collections.ConfigDict:
    """Every field of a GRPO recipe: the SFT run's fields plus `config.grpo`."""
    c = sft_defaults(preset)
    synthetic_data_defaults(c)
    c.job = "grpo"
    c.stage = "grpo"
    c.optimizer.learning_rate = 1e-5
    c.optimizer.warmup_steps = 0
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.train.steps = 50  # optimizer steps (one rollout each, times num_iterations)
    c.checkpoint.every = 10
    c.checkpoint.best_metric = ""
    g = c.grpo = ml_collections.ConfigDict()
    g.group_size = 8  # G completions per prompt
    g.prompts_per_step = 4  # groups per optimizer step (after dynamic sampling)
    g.max_new_tokens = 128  # completion budget
    g.temperature = 1.0  # rollout temperature (0: greedy)
    g.top_p = 1.0  # nucleus sampling of rollouts
    g.rewards = ml_collections.ConfigDict({"accuracy": 1.0, "format": 0.5})  # name -> weight
    # The reward that counts as correctness: T-GRPO's temporal bonus, the group rewards and the
    # logged `accuracy` read it (e.g. "tiou_v2" in a grounding recipe).
    g.correctness = "accuracy"
    # rewards.GROUP_REGISTRY name -> {"weight": w, **kwargs}, e.g. DAPO's overlong penalty:
    # {"overlong": {"weight": 1.0, "max_length": 128, "cache_length": 32}}
    g.group_rewards = ml_collections.ConfigDict()
    g.loss_type = "grpo"  # grpo | bnpo | dr_grpo | dapo
    g.importance_level = "token"  # token | sequence (GSPO) | sequence_token
    g.eps_low = 0.2  # clip range below 1
    g.eps_high = 0.2  # clip range above 1 (DAPO's clip-higher: 0.28)
    g.beta = 0.0  # KL coefficient to the reference policy (Video-R1: 0.04)
    g.kl_estimator = "k3"  # k1 | k2 | k3
    g.kl_clamp = 0.0  # clip the per-token KL estimate to +-this (Video-R1: 100); 0: no clamp
    g.dual_clip = (
        0.0  # dual-clip PPO: cap the loss of A < 0 tokens at dual_clip * |A| (> 1); 0: off
    )
    g.advantage_scale = "group"  # group (GRPO) | batch | none (Dr. GRPO)
    g.adv_eps = 1e-4  # added to the std
    g.num_iterations = 1  # optimizer steps per rollout (old log-probs recomputed when > 1)
    g.dynamic_sampling = True  # DAPO: drop groups whose rewards are all equal
    g.max_rollout_batches = 3  # prompt batches tried per step to fill it
    g.temporal = True  # T-GRPO: shuffled-frame rollouts and Video-R1's temporal bonus
    g.temporal_alpha = 0.3
    g.temporal_mu = 0.8
    g.eval_every = 0  # steps between greedy validation evals; 0: only at the end
    g.eval_batch_size = 16
    g.eval_examples = 64  # validation examples per eval
    return c


def eval_defaults() -> ml_collections.ConfigDict:
    """Every field of an evaluation recipe (job "eval") on the synthetic recipes' model."""
    config = sft_defaults("tiny")
    synthetic_data_defaults(config)
    config.model = synthetic_model()  # the synthetic recipes' architecture
    config.job = "eval"
    config.stage = "eval"  # name in results.json and of predictions_<stage>.jsonl
    config.init_from = ""  # a Hugging Face directory (ours or a real Qwen2.5-VL)
    config.checkpoint_dir = ""  # or an orbax folder of a stage (WORKDIR/checkpoints/STAGE)
    config.checkpoint_step = -1  # its step; -1: the latest
    config.checkpoint.async_save = False  # nothing is saved; kept for the shared run setup

    e = config.eval = ml_collections.ConfigDict()
    e.strategy = "greedy"  # greedy | self_consistency | adaptive_consistency | beam_search
    #                        | best_of_n | sparse_to_dense
    e.split = "test"  # synthetic split (ignored with annotations)
    e.annotations = ""  # an annotation file in any read_examples format; empty: the split
    e.format = ""  # its format (empty: detected)
    e.media_root = ""  # where its relative video paths start (empty: the file's folder)
    e.fps = 2.0  # annotation files: frames sampled per second of video
    e.num_frames = 0  # frames per video; 0: the dataset's own sampling (all synthetic frames)
    e.max_pixels = 0  # annotation files: video pixel cap, per frame for Qwen2.5-VL and over all
    #                   frames for Qwen3-VL (0: the family's default)
    e.total_pixels = 20480 * 28 * 28  # annotation files: per-video pixel budget (0: default)
    e.num_examples = 0  # evaluate the first N examples; 0: all
    e.batch_size = 16  # greedy: prompts per generate call
    e.patch_multiple = 256  # greedy: patch rows per batch rounded up (fewer compiled shapes)
    e.max_new_tokens = 128  # decode budget per completion
    e.temperature = 0.7  # sampled strategies: softmax temperature
    e.top_p = 0.95  # sampled strategies: nucleus
    e.questions_per_call = 8  # TTS strategies: questions per generate call (x samples: rows)
    e.num_samples = 8  # self_consistency / best_of_n / sparse_to_dense n; adaptive: the max
    e.round_size = 4  # adaptive_consistency: samples per round
    e.stopping = "beta"  # adaptive_consistency: beta (Aggarwal et al. 2023) | margin
    e.threshold = 0.95  # adaptive_consistency: beta confidence to stop at
    e.margin = 3  # adaptive_consistency: vote margin to stop at (stopping=margin)
    e.beam_width = 4  # beam_search
    e.length_alpha = 1.0  # beam_search: length-penalty exponent
    e.reward = "accuracy"  # each completion's score: accuracy (Video-R1's) | accuracy_lenient
    e.priors = True  # text-only priors fitted on the training split, scored beside the model
    e.ablations = ("blank", "shuffled_frames", "swapped")  # greedy: the same model, video ablated
    e.scorer = "mean_logprob"  # best_of_n: mean_logprob or a vlmm_jax.rewards name (format)
    e.frame_levels = (4, 8, 16)  # sparse_to_dense: ascending frame counts
    e.agreement = 1.0  # sparse_to_dense: vote share that stops at a level
    return config


# The fields a pipeline recipe (job "pipeline") holds once for all of its stages.
PIPELINE_SHARED = ("seed", "model", "data", "mesh", "logical_axis_rules", "multihost")


def stage_fields(recipe: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`recipe` without the shared fields: what a pipeline recipe keeps per stage."""
    out = ml_collections.ConfigDict(recipe.to_dict())
    for key in (*PIPELINE_SHARED, "job", "stage"):
        if key in out:
            del out[key]
    return out


def pipeline_defaults() -> ml_collections.ConfigDict:
    """Every field of the SFT -> GRPO -> TTS pipeline (`vlmm_jax.pipeline`) on synthetic data.

    The shared fields at the top; `sft` and `rl` hold the SFT and GRPO recipes' own fields,
    `eval` the evaluation fields, `tts` the test-time-scaling stages (name -> eval overrides).
    """
    base = sft_defaults("tiny")
    synthetic_data_defaults(base)
    base.model = synthetic_model()
    c = ml_collections.ConfigDict()
    c.job = "pipeline"
    for key in PIPELINE_SHARED:
        c[key] = base[key]
    c.align = stage_fields(base)  # vision-language alignment on dense perception targets
    c.align.train.steps = 0  # 0: no alignment stage (SFT starts from scratch)
    c.align.train.visual_diagnostics = 64
    c.align.export_hf_dir = ""  # set by the pipeline (WORKDIR/align_hf)
    c.align.data = ml_collections.ConfigDict({"synthetic": {"target": "perception"}})
    c.sft = stage_fields(base)
    c.sft.train.visual_diagnostics = 64
    c.sft.export_hf_dir = ""  # set by the pipeline (WORKDIR/sft_hf)
    c.rl = stage_fields(grpo_defaults())
    c.rl.init_from = ""  # set by the pipeline (the SFT export)
    c.rl.export_hf_dir = ""  # set by the pipeline (WORKDIR/grpo_hf)
    c.eval = eval_defaults().eval
    c.tts = ml_collections.ConfigDict(  # name -> overrides of `eval`: same questions as greedy
        {
            # 16 samples: its `scaling` curve (and tts_compute.png) has SC@1, 2, 4, 8, 16
            "self_consistency_16": {"strategy": "self_consistency", "num_samples": 16},
            "adaptive_consistency": {
                "strategy": "adaptive_consistency",
                "num_samples": 16,
                "round_size": 2,
            },
            "beam_search_4": {"strategy": "beam_search", "beam_width": 4},
        }
    )
    return c


def synthetic_model(preset: str = "tiny") -> ml_collections.ConfigDict:
    """The small CPU model of the synthetic recipes (4 decoder layers of width 128)."""
    m = model_config_dict(preset)
    m.hidden_size, m.intermediate_size, m.num_layers = 128, 384, 4
    m.num_heads, m.num_kv_heads, m.head_dim, m.mrope_section = 4, 2, 32, (4, 6, 6)
    m.vision.hidden_size, m.vision.intermediate_size, m.vision.out_hidden_size = 64, 128, 128
    return m
