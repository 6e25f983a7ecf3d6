"""Shared test set-up: eight fake CPU devices in the test process, config helpers."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after JAX_PLATFORMS)

# Eight fake CPU devices in this process, so sharding code paths run as on a pod
# slice. Set through jax.config rather than XLA_FLAGS, so that the commands tests
# start as subprocesses run on one device unless a test asks for more: a start on
# eight fake devices compiles and steps about 1.7x longer, and those tests are
# about the command, not the mesh. An XLA_FLAGS device count already set wins.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  jax.config.update("jax_num_cpu_devices", 8)
