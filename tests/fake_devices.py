"""XLA settings for the test session and the subprocesses its tests start.

`FAST_COMPILE`: the tests' programs are tiny, so compiling them dominates the suite. LLVM's
optimisation level 0 roughly halves the CPU compile time and leaves results unchanged (the
matmuls and convolutions are library calls either way). The conftest puts it in `XLA_FLAGS` for
the whole session; `xla_flags_without_fast_compile` takes it out where the compiler's output is
what a test measures (the TPU fit checks).

`cpu_devices_env`: XLA's CPU collectives abort the process when one device thread reaches an
all-reduce more than ~60 s after another (warn at 20 s, terminate 40 s later). On a loaded
2-core CI machine running several test workers, device threads can legitimately drift that far
apart, so the termination deadline is raised; a real deadlock still ends at the test's own
subprocess timeout.
"""

import os

FAST_COMPILE = "--xla_backend_optimization_level=0"


def session_xla_flags(flags: str) -> str:
    """`flags` with `FAST_COMPILE` added once."""
    return flags if FAST_COMPILE in flags.split() else f"{flags} {FAST_COMPILE}".strip()


def xla_flags_without_fast_compile() -> dict[str, str]:
    """`os.environ` with `FAST_COMPILE` taken out of `XLA_FLAGS`."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f != FAST_COMPILE)
    return {**os.environ, "XLA_FLAGS": flags}


def cpu_devices_env(devices: int) -> dict[str, str]:
    """`os.environ` plus JAX on `devices` fake CPU devices with a patient collective deadline
    (the session's other XLA flags kept)."""
    kept = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    flags = " ".join(
        [
            *kept,
            f"--xla_force_host_platform_device_count={devices}",
            "--xla_cpu_collective_call_terminate_timeout_seconds=1200",
        ]
    )
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
