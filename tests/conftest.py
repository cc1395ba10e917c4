"""Shared pytest setup: CPU only, full fp32 matmul precision for parity tests, fast XLA compiles
(`tests.fake_devices.FAST_COMPILE`) and one persistent XLA compilation cache for the whole
session.

The cache directory is made by the first process that imports this file (the xdist controller,
or a plain pytest run) and inherited through the environment by the xdist workers and every
subprocess a test starts: a resumed or second-process run, or the same recipe in two tests,
compiles its programs once. The process that made it removes it at exit. A cache directory
already set in the environment is used as it is and kept.
"""

import atexit
import os
import shutil
import tempfile

from tests.fake_devices import session_xla_flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = session_xla_flags(os.environ.get("XLA_FLAGS", ""))
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="vlmm_jax_test_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
