"""Shared test set-up: fake CPU devices before JAX starts, config helpers."""

import os

# Eight fake CPU devices, so sharding code paths run as on a pod slice. Must be
# set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
