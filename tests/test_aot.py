"""python -m minr_jax.aot: compiling for a TPU slice on a CPU host.

The compile tests need libtpu (the [tpu] extra) and are skipped without it; the
bad-input tests run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from minr_jax.config import ConfigError
from minr_jax.training import aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_libtpu = pytest.mark.skipif(
  aot.libtpu_path() is None, reason="libtpu is not installed (pip install 'jax[tpu]')"
)


def _aot(*args: str, hide_libtpu: bool = False) -> subprocess.CompletedProcess:
  """Runs the CLI from the repository root; hide_libtpu makes `import libtpu` fail."""
  prelude = "import sys; sys.modules['libtpu'] = None; " if hide_libtpu else ""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if hide_libtpu:
    env.pop("TPU_LIBRARY_PATH", None)
  code = prelude + "import runpy; runpy.run_module('minr_jax.aot', run_name='__main__')"
  return subprocess.run(
    [sys.executable, "-c", code, *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def _error_line(out: subprocess.CompletedProcess) -> str:
  """The one `error: ...` line, after checking that nothing compiled."""
  assert out.returncode == 1, (out.stdout, out.stderr)
  assert "compiling" not in out.stdout
  lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, out.stderr
  return lines[0]


def test_unknown_topology_is_one_line():
  line = _error_line(_aot("--config=configs/transinr.py:tiny", "--topology=v9-8"))
  assert "--topology='v9-8'" in line and "v4-8" in line


def test_missing_libtpu_is_one_line():
  line = _error_line(_aot("--config=configs/transinr.py:tiny", "--topology=v4-8", hide_libtpu=True))
  assert "libtpu is not installed" in line and "pip install" in line


def test_topology_names():
  assert aot.parse_topology("v4-8") == ("v4-8", aot.Slice("v4:2x2x1", "megacore"))
  assert aot.parse_topology("v5e-8")[1] == aot.parse_topology("v5litepod-8")[1]
  assert aot.parse_topology("v5litepod-8")[1].chips_per_host == (2, 4, 1)
  assert aot.parse_topology("v4:2x2x2")[1].chip_config == "megacore"  # v4 runs as megacore
  assert aot.parse_topology("v5e:2x4")[1] == aot.Slice("v5e:2x4")
  with pytest.raises(ConfigError, match="--topology='v4'"):
    aot.parse_topology("v4")


def _device(kind: str, coords: tuple[int, int, int], core: int = 0):
  return types.SimpleNamespace(device_kind=kind, coords=coords, core_on_chip=core, process_index=0)


def test_memory_per_device_splits_a_chip_between_its_devices():
  chips = [(x, y, 0) for x in range(2) for y in range(2)]
  megacore = [_device("TPU v4", c) for c in chips]
  per_core = [_device("TPU v4", c, core) for c in chips for core in (0, 1)]
  usable_v4 = aot.HBM_BYTES["TPU v4"][1]
  assert 30 * 2**30 < usable_v4 <= 32 * 2**30
  assert aot.memory_per_device(megacore) == usable_v4
  assert aot.memory_per_device(per_core) == usable_v4 // 2
  assert aot.memory_per_device([_device("TPU v5 lite", (0, 0, 0))]) == int(15.75 * 2**30)
  assert aot.memory_per_device([_device("TPU v99", (0, 0, 0))]) is None


class _Compiled:
  """What jax's Compiled returns for a step's cost and memory (per device)."""

  def cost_analysis(self):
    return {"flops": 1e9}

  def memory_analysis(self):
    return types.SimpleNamespace(
      argument_size_in_bytes=300,
      output_size_in_bytes=300,
      alias_size_in_bytes=250,
      temp_size_in_bytes=600,
    )


class _Jitted:
  def __init__(self, error: Exception | None = None):
    self.error = error

  def lower(self, *args):
    return self

  def compile(self):
    if self.error is not None:
      raise self.error
    return _Compiled()


def test_compile_step_counts_donated_buffers_once_and_reports_out_of_memory():
  report = aot.compile_step(_Jitted(), (), memory=950)
  assert report["total_bytes"] == 300 + 300 + 600 - 250
  assert report["fits"] is True and report["flops_per_device"] == 1e9
  assert aot.compile_step(_Jitted(), (), memory=949)["fits"] is False
  assert aot.compile_step(_Jitted(), (), memory=None)["fits"] is None
  oom = RuntimeError(
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory\n"
    "required (71.53G) exceeds available HBM (15.75G)."
  )
  report = aot.compile_step(_Jitted(oom), (), memory=950)
  assert report["fits"] is False and report["error"].startswith("RESOURCE_EXHAUSTED")
  assert "\n" not in report["error"]
  with pytest.raises(RuntimeError, match="INTERNAL"):
    aot.compile_step(_Jitted(RuntimeError("INTERNAL: a compiler bug")), (), memory=950)


@needs_libtpu
def test_unknown_libtpu_topology_is_one_line():
  line = _error_line(_aot("--config=configs/transinr.py:tiny", "--topology=v9:2x2"))
  assert "libtpu does not know the topology 'v9:2x2'" in line


@needs_libtpu
def test_batch_size_not_divisible_is_one_line():
  line = _error_line(
    _aot("--config=configs/transinr.py:tiny", "--topology=v4:2x2x1", "--config.batch_size=6")
  )
  assert "config.batch_size=6" in line and "4 devices" in line


@needs_libtpu
def test_tiny_compiles_for_tpu_v4():
  out = _aot("--config=configs/transinr.py:tiny", "--topology=v4:2x2x1")
  assert out.returncode == 0, out.stderr
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert (report["devices"], report["device_kind"]) == (4, "TPU v4")
  assert report["mesh"] == {"data": 4, "fsdp": 1}
  assert report["hbm_per_chip"] == 32 * 2**30
  assert report["memory_per_device"] == aot.HBM_BYTES["TPU v4"][1]
  # 'auto' resolves for the TPU devices, not for the CPU host that compiles.
  assert report["resolved"] == {"model.attention_impl": "batched", "model.inr_chunk": 0}
  train, evaluate = report["train_step"], report["eval_step"]
  for step in (train, evaluate):
    assert step["flops_per_device"] > 0 and step["argument_bytes"] > 0
    assert step["total_bytes"] == (
      step["argument_bytes"] + step["output_bytes"] + step["temp_bytes"] - step["alias_bytes"]
    )
    assert step["fits"] is True and step["compile_s"] > 0
  # The state is donated: the new state reuses its buffers.
  assert train["alias_bytes"] > 0 and evaluate["alias_bytes"] == 0
  # The eval step returns a few replicated (padded) scalar sums, less than one
  # tiny batch of images [4, 16, 16, 3] f32 = 12,288 bytes.
  assert evaluate["output_bytes"] < 8192
  # A backward pass and an optimizer update cost more than a forward pass.
  assert train["flops_per_device"] > 2 * evaluate["flops_per_device"]
