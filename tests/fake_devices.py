"""Environment for subprocesses that fake a multi-device CPU mesh.

XLA's CPU collectives abort the process when one device thread reaches an all-reduce more than
~60 s after another (warn at 20 s, terminate 40 s later). On a loaded 2-core CI machine running
several test workers, device threads can legitimately drift that far apart, so the termination
deadline is raised; a real deadlock still ends at the test's own subprocess timeout.
"""

import os


def cpu_devices_env(devices: int) -> dict[str, str]:
    """`os.environ` plus JAX on `devices` fake CPU devices with a patient collective deadline."""
    flags = (
        f"--xla_force_host_platform_device_count={devices}"
        " --xla_cpu_collective_call_terminate_timeout_seconds=1200"
    )
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
