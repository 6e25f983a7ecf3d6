"""config.profile: a jax.profiler trace of chosen steps, training unchanged."""

from __future__ import annotations

import glob
import json
import os

import pytest
from helpers import tiny_config

from minr_jax.config import ConfigError
from minr_jax.training import loop, profiling


@pytest.mark.parametrize("spec", ["5", "5:5", "7:3", "-1:2", "a:b", "1:2:3"])
def test_bad_profile_window_is_one_line_naming_the_field(spec):
  with pytest.raises(ConfigError, match=r"^config.profile="):
    profiling.parse(spec)


def test_profile_window_parses():
  assert profiling.parse("") is None
  assert profiling.parse("10:15") == (10, 15)


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f) if r["split"] == "train"}


@pytest.mark.slow
def test_profile_writes_a_trace_and_changes_nothing(tmp_path):
  data_dir = str(tmp_path / "tfds")
  plain, traced = str(tmp_path / "plain"), str(tmp_path / "traced")
  loop.train_and_evaluate(tiny_config(data_dir, num_train_steps=4), plain)
  loop.train_and_evaluate(tiny_config(data_dir, num_train_steps=4, profile="1:3"), traced)
  traces = glob.glob(os.path.join(traced, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))
  assert traces and os.path.getsize(traces[0]) > 0
  assert not os.path.exists(os.path.join(plain, "tensorboard", "plugins"))
  assert _losses(traced) == pytest.approx(_losses(plain), rel=1e-6)
