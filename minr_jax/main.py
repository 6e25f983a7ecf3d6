r"""`minr-train` / `python -m minr_jax.main`: train and evaluate a config, or print its parameters.

Re-running on the same workdir resumes (docs/training.md); several processes join one JAX
runtime with `--distributed` (docs/speed.md#scale-out).
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from minr_jax import cli
from minr_jax.config import ConfigError


def multihost_environment(env: dict[str, str] | None = None) -> bool:
  """Whether the environment shows a multi-host job JAX can detect by itself."""
  env = os.environ if env is None else env
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hosts) > 1:
    return True
  for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    try:
      if int(env.get(var, "1")) > 1:
        return True
    except ValueError:
      pass
  return False


def init_distributed(
  mode: str = "auto",
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Joins a multi-process JAX runtime if asked to; returns whether it did.

  Must run before any JAX computation. CPU processes exchange collectives
  through gloo (the setting only concerns JAX's CPU backend, so it is harmless
  on TPU and GPU hosts). Raises ConfigError for incomplete flags.
  """
  explicit = coordinator_address is not None
  if explicit and (num_processes is None or process_id is None):
    raise ConfigError("--coordinator_address needs --num_processes and --process_id")
  if not explicit and (num_processes is not None or process_id is not None):
    raise ConfigError("--num_processes and --process_id need --coordinator_address")
  if explicit and not 0 <= process_id < num_processes:
    raise ConfigError(f"--process_id={process_id} is not in [0, --num_processes={num_processes})")
  if mode == "off" or (mode == "auto" and not explicit and not multihost_environment()):
    return False
  import jax  # noqa: PLC0415 (kept out of `--help`)

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(
      coordinator_address, num_processes=num_processes, process_id=process_id
    )
  else:
    jax.distributed.initialize()
  return True


def train(f) -> None:
  """The command's body: join a multi-process runtime if asked, then train (or --summary)."""
  init_distributed(f.distributed, f.coordinator_address, f.num_processes, f.process_id)
  from minr_jax.training import loop, steps  # noqa: PLC0415 (--help and flag errors skip JAX)

  if f.summary:
    print(steps.summary(f.config))
    return
  if not f.workdir:
    raise ConfigError("--workdir is required to train")
  loop.train_and_evaluate(f.config, f.workdir, f.allow_config_change)


def run() -> None:
  """`minr-train` and `python -m minr_jax.main`: defines the flags, then runs `train`."""
  config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/transinr.py:demo.", lock_config=True
  )
  flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard files and PNG grids."
  )
  flags.DEFINE_bool("summary", False, "Print the parameter table and exit.")
  flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a checkpoint with a config that differs in fields "
    "beyond step counts, cadences, logging and evaluation (logged in config_changes.jsonl).",
  )
  flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "Multi-process start-up (jax.distributed.initialize): auto = when "
    "--coordinator_address is set or the environment shows a multi-host job.",
  )
  flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0's coordinator service, for "
    "multi-process runs outside TPU pods (with --num_processes and --process_id).",
  )
  flags.DEFINE_integer(
    "num_processes", None, "Number of processes of a multi-process run.", lower_bound=1
  )
  flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, --num_processes).", lower_bound=0
  )
  flags.mark_flag_as_required("config")
  cli.run(lambda args: train(flags.FLAGS))


if __name__ == "__main__":
  run()
