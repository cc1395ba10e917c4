"""What every job builds first: the mesh, the prepared data, the model and its policy.

`Session(config, workdir)` is shared by the SFT and GRPO trainers and the evaluation job:

  distributed   `jax.distributed.initialize()` when the config or the environment asks for it
  mesh, rules   `config.mesh`, `config.logical_axis_rules`
  data          the prepared dataset and tokenizer of `config.data.source` (synthetic: built and
                its tokenizer trained once; annotations: read and split), None for "random"
  model         `config.model` with the tokenizer's vocabulary and special ids
  parameters    their abstract shapes (with LoRA adapters when `config.lora.enabled`), logical
                shardings, and `initial_params()`: `config.init_from` or a seeded random init
  policy        `Policy(model, mesh, rules)` without parameters: callers `with_params` it
"""

from __future__ import annotations

import flax.linen as nn
import jax
import ml_collections

from vlmm_jax.config_dicts import build_model_config
from vlmm_jax.data import annotation_data, synthetic_data
from vlmm_jax.mesh import (
    logical_shardings,
    make_mesh,
    maybe_initialize_distributed,
    rules_from_config,
)
from vlmm_jax.models import Qwen2_5_VL, abstract_params, init_params, load_params
from vlmm_jax.models.lora import abstract_with_lora, add_lora, base_params
from vlmm_jax.policy import Policy


class Session:
    """The mesh, data, model, abstract parameters and policy template of a run (see above).

    Args:
      devices: the mesh's devices (default all of this job's), e.g. a TPU topology's devices
        when compiling ahead of time on a CPU host (`vlmm_jax.aot`).
      prepare_data: build / read the dataset and tokenizer; without it the model is exactly
        `config.model` (the AOT compile needs no data, checkpoint or tokenizer).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        *,
        devices=None,
        prepare_data: bool = True,
    ):
        if devices is None:
            maybe_initialize_distributed(config.get("multihost"))
        self.config, self.workdir = config, workdir
        self.mesh = make_mesh(dict(config.mesh), devices)
        self.rules = rules_from_config(config.logical_axis_rules)
        self.model_config = build_model_config(config.model)
        self.data = None  # the prepared dataset (and tokenizer), for sources that need one
        source = config.data.source if prepare_data else None
        if source == "synthetic":
            self.data = synthetic_data.prepare(config, self.model_config, workdir)
            self.model_config = self.data.model_config  # vocabulary and ids of its tokenizer
        elif source == "annotations":
            self.data = annotation_data.prepare(config, self.model_config, workdir)
            self.model_config = self.data.model_config  # the checkpoint's, with its tokenizer's ids
        self.model = Qwen2_5_VL(self.model_config)
        self.abstract = abstract_params(self.model_config)  # boxed: carries logical axes
        lora = config.get("lora")
        self.lora = None  # add_lora's keyword arguments when LoRA is on
        if lora is not None and lora.enabled:  # adapters under params["lora"], trained alone
            self.lora = {"targets": lora.targets, "rank": lora.rank, "alpha": lora.alpha}
            self.abstract = abstract_with_lora(self.abstract, **self.lora)
        self.policy = Policy(model=self.model, mesh=self.mesh, rules=self.rules)

    @property
    def abstract_params(self):
        """Unboxed `ShapeDtypeStruct`s of the parameters (adapters included)."""
        return nn.meta.unbox(self.abstract)

    def param_shardings(self):
        """`NamedSharding`s of the parameters, from their logical axes and the rules."""
        return logical_shardings(self.abstract, self.mesh, self.rules)

    def initial_params(self):
        """The run's starting parameters, placed on their shardings: `config.init_from` (a
        Hugging Face directory) or a random init from `config.seed`; plus fresh LoRA adapters
        when LoRA is on. Deterministic, so a resumed run can rebuild its KL reference."""
        key = jax.random.PRNGKey(self.config.seed)
        shardings = self.param_shardings()
        if self.config.get("init_from"):
            params = load_params(
                self.config.init_from,
                self.model_config,
                dtype=self.model_config.param_dtype,
                shardings=base_params(shardings),
            )
            if self.lora:  # only the adapters come out of the jit: no copy of the base
                lora_sh = shardings["lora"]
                add = jax.jit(lambda p, k: self._add_lora(p, k)["lora"], out_shardings=lora_sh)
                params = {**params, "lora": add(params, key)}
            return params
        init = lambda k: self._add_lora(init_params(self.model, k), k)  # noqa: E731
        return self.policy.jit(init, out_shardings=shardings)(key)

    def _add_lora(self, params, key):
        if not self.lora:
            return params
        return add_lora(params, rng=jax.random.fold_in(key, 1), **self.lora)
