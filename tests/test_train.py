"""End to end: train, evaluate, checkpoint, resume, errors.

Resuming after SIGTERM, SIGKILL or a corrupt checkpoint gives the losses of an
uninterrupted run: tests/test_reliability.py."""

from __future__ import annotations

import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from helpers import make_image_folder, tiny_config

from minr_jax import families, masking, writers
from minr_jax.config import ConfigError
from minr_jax.training import loop
from minr_jax.training import steps as steps_lib

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_image_folder(str(tmp_path_factory.mktemp("train_images")))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _records(workdir: str, split: str) -> dict[int, dict]:
  """Last metrics.jsonl record per step of one split (a resumed run repeats steps)."""
  out = {}
  for rec in writers.read_metrics(os.path.join(workdir, "metrics.jsonl")):
    if rec["split"] == split:
      out[rec["step"]] = rec
  return out


def test_train_writes_metrics_images_checkpoints_and_evaluates_deterministically(
  tmp_path, folder, data_dir
):
  config = tiny_config(data_dir, folder, tensorboard=True)
  workdir = str(tmp_path / "run")
  final = loop.train_and_evaluate(config, workdir)
  train_recs, eval_recs = _records(workdir, "train"), _records(workdir, "eval")
  assert sorted(train_recs) == [1, 2, 3, 4]
  assert {"loss", "psnr", "images_per_sec"} <= set(train_recs[1])
  assert sorted(eval_recs) == [2, 4]
  for key in ("psnr_full", "psnr_masked", "psnr_pasted", "psnr_full_mean_fill"):
    assert np.isfinite(eval_recs[4][key])
  assert eval_recs[4]["num_images"] == 4  # every val image, none twice
  assert eval_recs[4]["dataset"] == "image_folder:train_images0"
  (grid,) = [f for f in os.listdir(os.path.join(workdir, "images")) if "0000004" in f]
  assert os.path.getsize(os.path.join(workdir, "images", grid)) > 0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert os.listdir(os.path.join(workdir, "tensorboard", "train"))
  # A finished workdir: the same command restores and evaluates again, with the
  # same fixed masks, giving the same numbers.
  again = loop.train_and_evaluate(config, workdir)
  for key in ("psnr_full", "psnr_masked", "psnr_pasted"):
    assert again["image_folder:train_images0"][key] == pytest.approx(
      final["image_folder:train_images0"][key], abs=1e-6
    )


def test_loss_falls_on_a_short_run(tmp_path, folder, data_dir):
  config = tiny_config(
    data_dir,
    folder,
    num_train_steps=60,
    learning_rate=3e-3,
    eval_every_steps=60,
    checkpoint_every_steps=60,
    log_every_steps=1,
  )
  loop.train_and_evaluate(config, str(tmp_path))
  losses = [r["loss"] for _, r in sorted(_records(str(tmp_path), "train").items())]
  assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


def _main(workdir: str, config_args: list[str], **popen):
  cmd = [
    sys.executable,
    "-m",
    "minr_jax.main",
    "--config=configs/transinr.py:tiny",
    f"--workdir={workdir}",
    *config_args,
  ]
  return subprocess.Popen(
    cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
  )


# ------------------------------------------------------------------ errors ---


@pytest.mark.parametrize(
  "overrides,message",
  [
    (dict(dataset__name="cifar"), "dataset.name"),
    (dict(resolution=18), "config.resolution=18 is not divisible by config.mask_grid"),
    (dict(mask_ratio=1.0), "config.mask_ratio"),
    (dict(model__num_groups=3), "config.model.num_groups=3"),
  ],
)
def test_bad_config_fails_before_compiling(tmp_path, data_dir, overrides, message):
  config = tiny_config(data_dir, **overrides)
  with pytest.raises(ConfigError, match=message):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_missing_and_empty_folders_are_named(tmp_path, data_dir):
  missing = str(tmp_path / "nope")
  with pytest.raises(ConfigError, match=missing):
    loop.train_and_evaluate(tiny_config(data_dir, missing), str(tmp_path / "w1"))
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "notes.txt").write_text("no images here")
  with pytest.raises(ConfigError, match=str(empty)):
    loop.train_and_evaluate(tiny_config(data_dir, str(empty)), str(tmp_path / "w2"))


def test_unreadable_image_is_named(tmp_path, data_dir):
  folder = make_image_folder(str(tmp_path / "imgs"), num_train=3, num_val=2)
  bad = os.path.join(folder, "train", "broken.jpg")
  with open(bad, "wb") as f:
    f.write(b"this is not a jpeg")
  with pytest.raises(ConfigError, match="broken.jpg"):
    loop.train_and_evaluate(tiny_config(data_dir, folder), str(tmp_path / "w"))


def test_workdir_of_another_model_is_refused_and_kept(tmp_path, folder, data_dir):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(data_dir, folder, num_train_steps=2), workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(ConfigError, match="holds a different model"):
    loop.train_and_evaluate(
      tiny_config(data_dir, folder, num_train_steps=2, model__dim=48), workdir
    )
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_cli_prints_one_line_errors_and_the_summary(tmp_path):
  proc = _main(str(tmp_path), ["--config.mask_ratio=1.5"])
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 1
  assert err.strip().splitlines()[-1].startswith("error: config.mask_ratio")
  out = subprocess.run(
    [sys.executable, "-m", "minr_jax.main", "--config=configs/transinr.py", "--summary"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines()[-1] == "total parameters: 44,462,851"


@pytest.mark.parametrize(
  "strategy", ["random", "random_exact", "block", "center", "outpaint", "noise_filtered"]
)
def test_every_mask_strategy_draws_training_masks_from_the_config(strategy):
  import jax

  config = tiny_config("/unused", mask__strategy=strategy, mask_ratio=0.5)
  images = jax.numpy.zeros((8, 16, 16, 3))
  masks = np.asarray(
    jax.jit(lambda k: masking.to_pixels(masking.train_masks(config, k, images.shape[0]), 16, 16))(
      jax.random.key(0)
    )
  )
  assert masks.shape == (8, 16, 16)
  assert abs(masks.mean() - 0.5) < (0.15 if strategy == "random" else 1e-6)


def test_training_with_block_masks_and_a_ratio_range(tmp_path, folder, data_dir):
  config = tiny_config(
    data_dir,
    folder,
    num_train_steps=2,
    mask__strategy="block",
    mask__ratio_min=0.3,
    mask__ratio_max=0.9,
    eval_mask_strategy="center",
  )
  final = loop.train_and_evaluate(config, str(tmp_path))
  recs = _records(str(tmp_path), "train")
  fractions = [r["mask_fraction"] for r in recs.values()]
  assert all(0.3 - 1e-6 <= f <= 0.9 + 1e-6 for f in fractions)
  assert np.isfinite(final["image_folder:train_images0"]["psnr_full"])


def test_ginr_trains_evaluates_and_resumes_through_the_same_loop(tmp_path, folder, data_dir):
  from configs import ginr as ginr_config

  config = ginr_config.get_config("tiny")
  config.dataset.name, config.dataset.path = "image_folder", folder
  config.dataset.data_dir = data_dir
  config.batch_size = config.eval_batch_size = 8
  config.num_train_steps = 2
  config.model.coord_noise = 0.5  # GINR's jitter runs inside the jitted step
  workdir = str(tmp_path)
  final = loop.train_and_evaluate(config, workdir)
  assert np.isfinite(final["image_folder:train_images0"]["psnr_full"])
  assert type(families.get(config).build(config)).__name__ == "GINR"
  again = loop.train_and_evaluate(config, workdir)  # restores, evaluates the same
  assert again["image_folder:train_images0"]["psnr_full"] == pytest.approx(
    final["image_folder:train_images0"]["psnr_full"], abs=1e-6
  )
  # The reuse API serves GINR checkpoints too.
  import minr_jax

  model = minr_jax.load(workdir)
  images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
  pred, _ = model.reconstruct(images)
  np.testing.assert_allclose(model.render(images, 16, 16, mask="random"), pred, atol=1e-5)
  assert model.embed(images, kind="modulations").shape[0] == 2


def test_mae_trains_and_evaluates_through_the_same_loop(tmp_path, folder, data_dir):
  from configs import mae as mae_config

  config = mae_config.get_config("tiny")
  config.dataset.name, config.dataset.path = "image_folder", folder
  config.dataset.data_dir = data_dir
  config.batch_size = config.eval_batch_size = 8
  config.num_train_steps, config.log_every_steps = 3, 1
  final = loop.train_and_evaluate(config, str(tmp_path))
  result = final["image_folder:train_images0"]
  assert np.isfinite(result["psnr_full"]) and result["num_images"] == 4
  assert type(families.get(config).build(config)).__name__ == "MAE"
  fractions = [r["mask_fraction"] for r in _records(str(tmp_path), "train").values()]
  assert fractions == [0.75] * 3  # exact-count masks
  config.mask.strategy = "random"
  with pytest.raises(ConfigError, match="exact-count"):
    loop.train_and_evaluate(config, str(tmp_path / "other"))


def test_train_and_eval_steps_trace_once_across_steps():
  """make_steps' functions are traced once: new steps, keys and batches never retrace."""
  import jax

  from minr_jax import masking, sharding

  config = tiny_config("/unused")
  mesh = sharding.make_mesh(config)
  steps = steps_lib.make_steps(config, mesh)
  state = steps.init_state(jax.random.key(0))
  rng = np.random.default_rng(0)
  for i in range(3):
    images = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
    batch = sharding.global_batch(mesh, {"image": images})
    state, out = steps.train_step(state, batch, jax.random.key(i))
    eval_batch = sharding.global_batch(
      mesh,
      {"image": images, "valid": np.ones(8, bool), "index": np.arange(8, dtype=np.int32) + 8 * i},
    )
    sums = steps.eval_step(
      state.params, eval_batch, masking.eval_masks(config, eval_batch["index"])
    )
    assert int(sums["count"]) == 8 and float(out["finite"]) == 1.0
  assert steps.train_step._cache_size() == 1
  assert steps.eval_step._cache_size() == 1


def test_runs_in_one_process_reuse_the_step_functions_of_the_same_maths(tmp_path, folder, data_dir):
  """steps_lib.steps_for_run: built once per maths and mesh; each run keeps its own config."""
  from minr_jax import sharding

  base = tiny_config(data_dir, folder, num_train_steps=3, log_every_steps=1)
  mesh, family = sharding.make_mesh(base), families.get(base)
  steps_lib._steps_kept.clear()
  first = steps_lib.steps_for_run(base, mesh, family)
  # Loop-only fields (seed, data, cadences) share the functions, not the config.
  other = tiny_config(
    data_dir,
    str(tmp_path / "elsewhere"),
    num_train_steps=3,
    log_every_steps=1,
    seed=5,
    eval_every_steps=7,
  )
  shared = steps_lib.steps_for_run(other, mesh, family)
  assert shared.train_step is first.train_step and shared.eval_step is first.eval_step
  assert (shared.config.seed, shared.config.dataset.path) == (5, other.dataset.path)
  assert first.config.seed == 0
  # The maths or the mesh changed: new functions.
  for changed, on in [
    (tiny_config(data_dir, folder, num_train_steps=4), mesh),  # the lr schedule's length
    (tiny_config(data_dir, folder, num_train_steps=3, learning_rate=1e-2), mesh),
    (base, sharding.make_mesh(tiny_config(data_dir, folder, mesh__data=2))),
  ]:
    assert steps_lib.steps_for_run(changed, on, family).train_step is not first.train_step
  # A run on reused functions trains as one on freshly built ones; a seed is its own.
  steps_lib._steps_kept.clear()
  loop.train_and_evaluate(base, str(tmp_path / "built"))
  loop.train_and_evaluate(base, str(tmp_path / "reused"))
  base.seed = 1
  loop.train_and_evaluate(base, str(tmp_path / "seed1"))
  assert len(steps_lib._steps_kept) == 1
  built = _records(str(tmp_path / "built"), "train")
  reused = _records(str(tmp_path / "reused"), "train")
  assert [built[s]["loss"] for s in (1, 2, 3)] == [reused[s]["loss"] for s in (1, 2, 3)]
  assert _records(str(tmp_path / "seed1"), "train")[1]["loss"] != built[1]["loss"]


def test_the_loops_save_policy_counts_steps_the_last_step_and_the_time_cadence():
  config = ml_collections.ConfigDict(dict(checkpoint_every_steps=10, num_train_steps=25))
  due = [s for s in range(1, 26) if loop._save_due(config, s, None, None)]
  assert due == [10, 20, 25]
  # A time cadence of 4 steps since the last save adds saves between the step ones.
  assert loop._save_due(config, 7, 3, 4) and not loop._save_due(config, 6, 3, 4)
  assert loop._save_due(config, 4, None, 4)  # never saved: counted from step 0


def test_the_loops_divergence_policy_names_the_step_and_the_last_good_checkpoint():
  good = [{"finite": np.float32(1.0)}] * 3
  loop._check_finite_flags(good, 3, None)
  with pytest.raises(loop.DivergedError, match="by step 4;.*last good checkpoint: /ckpt/2"):
    loop._check_finite_flags(good + [{"finite": np.float32(0.0)}], 4, "/ckpt/2")
