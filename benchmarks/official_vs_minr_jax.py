r"""Same-run speed comparison: the official PyTorch TransINR-MINR against minr_jax.

Times one training step at the paper's configuration (182 px, batch 16, 14x14 mask grid at 75%,
a 6-block 768-wide transformer, 44,462,851 parameters, Adam 1e-4, float32) of both code bases,
alternating on the same machine in one run: official, minr_jax, official, minr_jax, ... for
`--rounds` rounds. Shared machines drift by several percent within minutes, so only a ratio
measured this way (each side's steps interleaved with the other's) compares the two.

Nothing of the official code is in this repository. Fetch it yourself:

  git clone https://github.com/heosuab/MINR /path/to/MINR    # the authors' code (tested: 79db4ca)

Its TransINR-based model lives in `trans-MINR/`. torch is not a dependency of minr_jax: give it,
and what the official model code imports, a virtual environment of its own:

  python -m venv ~/torchvenv
  ~/torchvenv/bin/pip install torch numpy einops tensorboardX pyyaml

Then, from the root of this repository, with minr_jax installed in the current Python:

  python benchmarks/official_vs_minr_jax.py --official=/path/to/MINR \
      --torch_python=$HOME/torchvenv/bin/python --rounds=2 --steps=3 --warmup=1

Extra arguments after `--` go to `python -m minr_jax.bench` (for example
`-- --config.model.dtype=bfloat16`).

The official step. The official trainer (`trans-MINR/trainers/imgrec_trainer.py`) moves every
batch to CUDA, so this script drives the official model itself, the way that trainer's training
step does: the model is built by the official `models.make` from the official
`cfgs/imgrec_celeba.yaml` (the paper config), the optimizer by the official `utils.make_optimizer`
(Adam, lr 1e-4); each step zeroes the gradients, runs the model on the masked images to get the
per-image INR, renders it on the official `utils.make_coord_grid` pixel-centre grid, takes the mean
over images of each image's MSE against the unmasked image, back-propagates and steps Adam. Masks
are drawn inside the timed step, as minr_jax's step does (the official code draws them in its data
loader with a Python loop): each of the 14x14 patches of 13 px hidden with probability 0.75.
Images are random (fixed seed), as in `python -m minr_jax.bench`; data loading is not timed on
either side. torch keeps its default thread count.

The minr_jax step is `python -m minr_jax.bench --config=configs/transinr.py`: the same jitted
train step the training loop runs (mask drawing, forward, backward, Adam), compiled once per round.

Prints each run's step times as it goes, then one JSON object on its last line: per round the
median step of each side and their ratio (official / minr_jax), the ratio of the medians over all
rounds, the torch and jax versions, thread count, CPU and load average. `--output=FILE` also writes
that JSON to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_NUM_PARAMETERS = 44_462_851
MASK_GRID, MASK_RATIO = 14, 0.75


def _cpu_name() -> str:
  """The CPU's model name, family and model, and AVX-512 support (Linux), else platform's guess.

  Virtual machines often report only "AMD EPYC"; the family and model tell its generation.
  """
  fields = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    return platform.processor() or platform.machine()
  flags = fields.get("flags", "").split()
  avx512 = "avx512f" in flags
  return (
    f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
    f"model {fields.get('model', '?')}, AVX-512 {'yes' if avx512 else 'no'}"
    f"{', AVX512-BF16' if 'avx512_bf16' in flags else ''})"
  )


def official_worker(args: argparse.Namespace) -> None:
  """Runs inside the torch environment: times the official model's training step."""
  code = os.path.join(os.path.abspath(os.path.expanduser(args.official)), "trans-MINR")
  if not os.path.isdir(os.path.join(code, "models")):
    sys.exit(f"error: --official: no trans-MINR/models in {args.official}")
  sys.path.insert(0, code)
  import importlib
  import importlib.util

  import torch
  import yaml

  # The released models/__init__.py imports its submodules before it defines `register`, which
  # they import from it; so load the registry first, then the package (no file is edited).
  spec = importlib.util.spec_from_file_location(
    "models",
    os.path.join(code, "models", "__init__.py"),
    submodule_search_locations=[os.path.join(code, "models")],
  )
  models = importlib.util.module_from_spec(spec)
  sys.modules["models"] = models
  registry = importlib.import_module("models.models")
  models.register, models.make = registry.register, registry.make
  spec.loader.exec_module(models)
  import utils  # the official code's utils, from --official

  with open(os.path.join(code, "cfgs", "imgrec_celeba.yaml")) as f:
    cfg = yaml.safe_load(f)
  torch.manual_seed(args.seed)
  model = models.make(cfg["model"])
  model.train()
  num_parameters = sum(p.numel() for p in model.parameters())
  if num_parameters != PAPER_NUM_PARAMETERS:
    sys.exit(
      f"error: the official model has {num_parameters:,} parameters, "
      f"expected {PAPER_NUM_PARAMETERS:,}"
    )
  optimizer = utils.make_optimizer(model.parameters(), cfg["optimizer"])
  res = cfg["model"]["args"]["tokenizer"]["args"]["input_size"]  # 182
  batch = cfg["train_dataset"]["loader"]["batch_size"]  # 16
  images = torch.rand(batch, 3, res, res)  # [B, 3, H, W] in [0, 1], as the official loader gives
  patch = res // MASK_GRID

  def step() -> float:
    keep = (torch.rand(batch, MASK_GRID, MASK_GRID) >= MASK_RATIO).to(images.dtype)
    keep = keep.repeat_interleave(patch, 1).repeat_interleave(patch, 2)  # [B, H, W]
    optimizer.zero_grad()
    hyponet = model({"inp": images * keep[:, None]})
    coord = utils.make_coord_grid((res, res), (-1, 1))  # [H, W, 2]
    pred = hyponet(coord.unsqueeze(0).expand(batch, -1, -1, -1))  # [B, H, W, 3]
    target = images.permute(0, 2, 3, 1)
    loss = ((pred - target) ** 2).reshape(batch, -1).mean(dim=1).mean()
    loss.backward()
    optimizer.step()
    return loss.item()

  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    loss = step()
    elapsed = time.perf_counter() - start
    if i >= args.warmup:
      times.append(elapsed)
    print(
      f"  official step {i} ({'timed' if i >= args.warmup else 'warm-up'}): "
      f"{elapsed:.2f} s, loss {loss:.5f}",
      file=sys.stderr,
      flush=True,
    )
  print(
    json.dumps(
      dict(
        train_step_s=dict(median=statistics.median(times), all=times),
        num_parameters=num_parameters,
        torch_version=torch.__version__,
        num_threads=torch.get_num_threads(),
      )
    ),
    flush=True,
  )


def _last_json(stdout: str) -> dict:
  """The last line of a run's output that parses as a JSON object."""
  for line in reversed(stdout.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  raise RuntimeError("no JSON result in the output")


def _run(cmd: list[str], name: str) -> tuple[dict, float]:
  """Runs one side; its progress goes to stderr, its JSON result is returned with the wall time."""
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
  wall = time.perf_counter() - start
  if proc.returncode:
    sys.exit(f"error: the {name} run failed ({proc.returncode}): {' '.join(cmd)}")
  return _last_json(proc.stdout), wall


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--official",
    required=True,
    help="A checkout of https://github.com/heosuab/MINR (holds trans-MINR/).",
  )
  parser.add_argument(
    "--torch_python",
    default=None,
    help="The Python of a virtual environment with torch, numpy, einops, tensorboardX and pyyaml.",
  )
  parser.add_argument("--rounds", type=int, default=2, help="official, minr_jax pairs to run.")
  parser.add_argument("--steps", type=int, default=3, help="Timed steps per run.")
  parser.add_argument("--warmup", type=int, default=1, help="Untimed steps per run first.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default=None, help="Also write the JSON summary here.")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args, bench_args = parser.parse_known_args()
  bench_args = [a for a in bench_args if a != "--"]
  if args.worker:
    official_worker(args)
    return
  if not args.torch_python:
    sys.exit("error: --torch_python is required (the Python of the torch environment)")
  if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
    sys.exit("error: --rounds and --steps must be >= 1, --warmup >= 0")
  if not os.path.isdir(os.path.join(os.path.expanduser(args.official), "trans-MINR")):
    sys.exit(f"error: --official: no trans-MINR/ in {args.official}")

  official_cmd = [
    os.path.expanduser(args.torch_python),
    os.path.abspath(__file__),
    "--worker",
    f"--official={args.official}",
    f"--steps={args.steps}",
    f"--warmup={args.warmup}",
    f"--seed={args.seed}",
  ]
  jax_cmd = [
    sys.executable,
    "-m",
    "minr_jax.bench",
    "--config=configs/transinr.py",
    f"--steps={args.steps}",
    f"--warmup={args.warmup}",
    "--eval_steps=1",
    *bench_args,
  ]
  rounds = []
  for r in range(args.rounds):
    print(f"round {r + 1}/{args.rounds}: official", file=sys.stderr, flush=True)
    official, official_wall = _run(official_cmd, "official")
    print(f"  official median {official['train_step_s']['median']:.2f} s", file=sys.stderr)
    print(f"round {r + 1}/{args.rounds}: minr_jax", file=sys.stderr, flush=True)
    jax_out, jax_wall = _run(jax_cmd, "minr_jax")
    print(
      f"  minr_jax median {jax_out['train_step_s']['median']:.2f} s "
      f"(steps {jax_out['train_step_s']['all']})",
      file=sys.stderr,
      flush=True,
    )
    rounds.append(
      dict(
        official_step_s=official["train_step_s"],
        minr_jax_step_s=dict(
          median=jax_out["train_step_s"]["median"], all=jax_out["train_step_s"]["all"]
        ),
        ratio=official["train_step_s"]["median"] / jax_out["train_step_s"]["median"],
        official_wall_s=round(official_wall, 1),
        minr_jax_wall_s=round(jax_wall, 1),
        minr_jax_compile_s=jax_out.get("compile_s"),
        minr_jax_dtype=jax_out.get("dtype"),
        minr_jax_num_parameters=jax_out.get("num_parameters"),
      )
    )

  all_official = [t for r in rounds for t in r["official_step_s"]["all"]]
  all_jax = [t for r in rounds for t in r["minr_jax_step_s"]["all"]]
  import jax  # only here: the official worker above runs without jax

  summary = dict(
    rounds=rounds,
    official_median_s=statistics.median(all_official),
    minr_jax_median_s=statistics.median(all_jax),
    ratio=statistics.median(all_official) / statistics.median(all_jax),
    torch_version=official["torch_version"],
    torch_threads=official["num_threads"],
    jax_version=jax.__version__,
    bench_args=bench_args,
    steps=args.steps,
    warmup=args.warmup,
    cpu=_cpu_name(),
    cpu_count=os.cpu_count(),
    load_average=[round(x, 2) for x in os.getloadavg()],
  )
  if args.output:
    with open(args.output, "w") as f:
      json.dump(summary, f, indent=2)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
