"""The linear probe on embedding files (no model needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minr_jax.config import ConfigError
from minr_jax.inference import embed, probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blobs(n: int, seed: int, dim: int = 16, shares=(0.7, 0.3)) -> tuple[np.ndarray, np.ndarray]:
  """Two Gaussian blobs [n, dim] (unequal sizes) with a large offset along one random axis."""
  rng = np.random.default_rng(seed)
  labels = (rng.uniform(size=n) > shares[0]).astype(np.int64) * 7  # classes 0 and 7
  direction = np.random.default_rng(0).normal(size=dim)
  direction /= np.linalg.norm(direction)
  x = rng.normal(size=(n, dim)) * 2.0 + 5.0  # scale and offset: standardization matters
  x += np.where(labels[:, None] == 7, 6.0, -6.0) * direction
  return x.astype(np.float32), labels


def write(path: str, x: np.ndarray, labels: np.ndarray | None, kind: str = "data_mean") -> str:
  arrays = {"embeddings": x, "indices": np.arange(len(x))}
  if labels is not None:
    arrays["labels"] = labels
  arrays["kind"] = np.asarray(kind)
  embed.save_npz(path, arrays)
  return path


def test_probe_separates_two_blobs_and_reports_the_majority_baseline(tmp_path, capsys):
  train_x, train_y = blobs(300, seed=1)
  test_x, test_y = blobs(200, seed=2)
  out = str(tmp_path / "probe.json")
  results = probe.run(
    write(str(tmp_path / "train.npz"), train_x, train_y),
    write(str(tmp_path / "test.npz"), test_x, test_y),
    steps=300,
    output=out,
  )
  majority = float(np.mean(test_y == 0))
  assert results["majority_baseline"] == pytest.approx(majority)
  assert 0.6 < majority < 0.8
  assert results["accuracy"] > 0.95 > majority + 0.1
  assert results["num_classes"] == 2 and results["dim"] == 16
  assert results["unseen_test_labels"] == 0
  printed = capsys.readouterr().out
  assert "test accuracy" in printed and "majority-class baseline" in printed
  with open(out) as f:
    assert json.load(f)["accuracy"] == results["accuracy"]


def test_probe_reads_array_record_files(tmp_path):
  x, y = blobs(120, seed=3, dim=4)
  path = str(tmp_path / "train.array_record")
  sink = embed._ArrayRecordSink(path)  # pylint: disable=protected-access
  for i, (row, label) in enumerate(zip(x, y)):
    sink.write(embed._record(row, i, f"img{i}", int(label), "weight_mean"))  # pylint: disable=protected-access
  sink.close()
  read = embed.read_embeddings(path)
  np.testing.assert_array_equal(read["embeddings"], x)
  np.testing.assert_array_equal(read["labels"], y)
  assert read["ids"][5] == "img5" and read["kind"] == "weight_mean"
  test = write(str(tmp_path / "test.npz"), *blobs(80, seed=4, dim=4), kind="weight_mean")
  assert probe.run(path, test, steps=200)["accuracy"] > 0.9


def test_probe_errors_name_the_problem(tmp_path):
  x, y = blobs(50, seed=5)
  good = write(str(tmp_path / "good.npz"), x, y)
  with pytest.raises(ConfigError, match="has no labels"):
    probe.run(write(str(tmp_path / "nolabels.npz"), x, None), good)
  with pytest.raises(ConfigError, match="has no labels"):  # all -1: unlabelled folder
    probe.run(good, write(str(tmp_path / "unlabelled.npz"), x, np.full(50, -1)))
  with pytest.raises(ConfigError, match="no label"):
    probe.run(write(str(tmp_path / "some.npz"), x, np.where(y == 0, -1, y)), good)
  with pytest.raises(ConfigError, match="dims differ"):
    probe.run(good, write(str(tmp_path / "narrow.npz"), x[:, :8], y))
  with pytest.raises(ConfigError, match="kinds differ"):
    probe.run(good, write(str(tmp_path / "mods.npz"), x, y, kind="modulations"))
  with pytest.raises(ConfigError, match="single class"):
    probe.run(write(str(tmp_path / "one.npz"), x, np.zeros(50, np.int64)), good)
  with pytest.raises(ConfigError, match="does not exist"):
    probe.run(str(tmp_path / "missing.npz"), good)
  with open(tmp_path / "junk.npz", "w") as f:
    f.write("not a zip")
  with pytest.raises(ConfigError, match="not an .npz"):
    probe.run(str(tmp_path / "junk.npz"), good)
  with pytest.raises(ConfigError, match="--steps"):
    probe.run(good, good, steps=0)


def test_unseen_test_labels_count_as_errors(tmp_path):
  x, y = blobs(100, seed=6)
  test_y = y.copy()
  test_y[:10] = 3  # a class training never saw
  results = probe.run(
    write(str(tmp_path / "a.npz"), x, y), write(str(tmp_path / "b.npz"), x, test_y), steps=100
  )
  assert results["unseen_test_labels"] == 10
  assert results["accuracy"] <= 0.9 + 1e-9


@pytest.mark.slow
def test_command_line_prints_one_error_line(tmp_path):
  x, y = blobs(20, seed=7)
  good = write(str(tmp_path / "good.npz"), x, y)
  bad = write(str(tmp_path / "bad.npz"), x, None)
  result = subprocess.run(
    [sys.executable, "-m", "minr_jax.probe", f"--train={good}", f"--test={bad}"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    f"error: {bad} has no labels (embed a dataset with class labels)"
  ]


def test_validation_split_is_stratified_disjoint_and_seeded():
  labels = np.array([0] * 10 + [3] * 5 + [5] * 2 + [9] * 1)
  np.random.default_rng(0).shuffle(labels)
  fit, val = probe.validation_split(labels, 0.2, seed=4)
  assert len(np.intersect1d(fit, val)) == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([fit, val])), np.arange(len(labels)))
  # round(0.2 n), at least 1, and every class keeps a row to fit on.
  assert [int((labels[val] == c).sum()) for c in (0, 3, 5, 9)] == [2, 1, 1, 0]
  assert set(labels[fit]) == {0, 3, 5, 9}
  again = probe.validation_split(labels, 0.2, seed=4)
  np.testing.assert_array_equal(again[1], val)
  others = [probe.validation_split(labels, 0.2, seed=s)[1] for s in range(5, 10)]
  assert any(not np.array_equal(o, val) for o in others)


def test_chosen_l2_comes_from_the_sweep_and_not_from_the_test_set(tmp_path, capsys):
  train_x, train_y = blobs(200, seed=8, dim=8)
  train = write(str(tmp_path / "train.npz"), train_x, train_y)
  sweep = (0.003, 0.5, 7.0)
  out = str(tmp_path / "probe.json")
  results = probe.run(
    train,
    write(str(tmp_path / "test.npz"), *blobs(100, seed=9, dim=8)),
    steps=150,
    l2_sweep=sweep,
    output=out,
  )
  assert results["l2_chosen_by"] == "validation"
  assert [r["l2"] for r in results["l2_sweep"]] == list(sweep)
  accs = [r["val_accuracy"] for r in results["l2_sweep"]]
  assert all(0.0 <= a <= 1.0 for a in accs)
  best = max(accs)
  assert results["l2"] == max(l2 for l2, a in zip(sweep, accs) if a == best)
  assert results["num_val"] == 40  # 20% of each class of 200 rows
  printed = capsys.readouterr().out
  assert f"l2 {results['l2']:g} chosen" in printed and "validation accuracy per l2" in printed
  with open(out) as f:
    saved = json.load(f)
  assert saved["l2"] == results["l2"] and saved["l2_sweep"] == results["l2_sweep"]
  # Another test set: the same choice (the test set plays no part in it).
  other = probe.run(
    train, write(str(tmp_path / "test2.npz"), *blobs(60, seed=10, dim=8)), steps=150, l2_sweep=sweep
  )
  assert other["l2"] == results["l2"] and other["l2_sweep"] == results["l2_sweep"]
  # A given l2 skips the sweep.
  given = probe.run(train, train, steps=50, l2=0.25)
  assert given["l2"] == 0.25 and given["l2_chosen_by"] == "given"
  assert given["l2_sweep"] == [] and given["num_val"] == 0


def test_sweep_is_scored_on_rows_it_was_not_fitted_on(tmp_path):
  # Random labels in more dimensions than rows: a weakly regularised probe
  # memorises whatever it is fitted on, but cannot predict held-out rows.
  rng = np.random.default_rng(11)
  x = rng.normal(size=(200, 400)).astype(np.float32)
  y = rng.integers(0, 2, size=200)
  train = probe.probe(
    {"embeddings": x, "labels": y}, {"embeddings": x, "labels": y}, steps=200, l2=1e-4
  )
  assert train["accuracy"] == 1.0  # scored on its own rows: perfect
  swept = probe.probe(
    {"embeddings": x, "labels": y}, {"embeddings": x, "labels": y}, steps=200, l2_sweep=(1e-4, 1e-2)
  )
  assert swept["num_val"] == 40
  for r in swept["l2_sweep"]:
    assert r["val_accuracy"] < 0.75, swept["l2_sweep"]


def test_sweep_settings_are_checked(tmp_path):
  x, y = blobs(40, seed=12, dim=4)
  data = {"embeddings": x, "labels": y}
  with pytest.raises(ConfigError, match="--l2_sweep"):
    probe.probe(data, data, steps=10, l2_sweep=())
  with pytest.raises(ConfigError, match="--l2_sweep"):
    probe.probe(data, data, steps=10, l2_sweep=(1e-2, -1.0))
  with pytest.raises(ConfigError, match="--val_fraction"):
    probe.probe(data, data, steps=10, val_fraction=1.0)
  with pytest.raises(ConfigError, match="--split_seed"):
    probe.probe(data, data, steps=10, split_seed=-1)
  tiny = {"embeddings": x[:2], "labels": np.array([0, 1])}
  with pytest.raises(ConfigError, match="validation split"):
    probe.probe(tiny, tiny, steps=10)
  assert probe.probe(tiny, tiny, steps=10, l2=0.1)["num_train"] == 2


@pytest.mark.slow
def test_command_line_rejects_a_bad_sweep_in_one_line(tmp_path):
  x, y = blobs(20, seed=7)
  good = write(str(tmp_path / "good.npz"), x, y)
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "minr_jax.probe",
      f"--train={good}",
      f"--test={good}",
      "--l2_sweep=1e-3,abc",
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    "error: --l2_sweep must be comma-separated numbers, got 1e-3,abc"
  ]
