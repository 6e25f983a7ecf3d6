"""minr_jax.load / api.Model: restore a tiny run's checkpoint and reuse it; the embed command."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import make_image_folder, tiny_config

import minr_jax
from minr_jax import data, families, masking, metrics
from minr_jax.config import ConfigError
from minr_jax.evaluation import scoring
from minr_jax.inference import embed
from minr_jax.training import loop

pytestmark = pytest.mark.slow  # end-to-end: trains or runs subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_labelled_folder(root: str) -> str:
  """make_image_folder's train/ and val/ with the images in class folders a/ and b/."""
  make_image_folder(root, num_train=12, num_val=6)
  for split in ("train", "val"):
    split_dir = os.path.join(root, split)
    for i, name in enumerate(sorted(os.listdir(split_dir))):
      label_dir = os.path.join(split_dir, "ab"[i % 2])
      os.makedirs(label_dir, exist_ok=True)
      shutil.move(os.path.join(split_dir, name), os.path.join(label_dir, name))
  return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 2-step tiny run on 8 fake devices: (workdir, config, final eval, Minr)."""
  root = tmp_path_factory.mktemp("api")
  folder = make_labelled_folder(str(root / "pets"))
  config = tiny_config(str(root / "tfds"), folder, num_train_steps=2)
  workdir = str(root / "run")
  final = loop.train_and_evaluate(config, workdir)
  return workdir, config, final["image_folder:pets"], minr_jax.load(workdir)


@pytest.fixture(scope="module")
def eval_batch(run):
  _, config, _, _ = run
  return next(iter(data.make_eval_batches(config)))


def test_load_restores_the_run(run):
  workdir, config, _, m = run
  assert m.step == 2 and m.workdir == workdir
  assert m.mesh.devices.size == 8
  assert m.config.model.dim == config.model.dim
  assert m.num_params == families.count_params(m.params) > 0
  assert isinstance(m.model, type(families.get(config).build(config)))


def test_reconstruct_equals_training_eval_step(run, eval_batch):
  _, config, final, m = run
  grid_fn = jax.jit(
    functools.partial(
      scoring._grid_predict, model=m.model, family=families.get(m.config), config=m.config
    )
  )
  inputs, pred_eval, *_ = grid_fn(
    m.params, eval_batch, masking.eval_masks(m.config, eval_batch["index"])
  )
  out = {"inputs": inputs, "pred": pred_eval}
  valid = eval_batch["valid"]
  images, indices = eval_batch["image"][valid], eval_batch["index"][valid]
  pred, mask = m.reconstruct(images, indices=indices)
  assert pred.shape == images.shape and mask.shape == images.shape[:3]
  assert mask.dtype == bool and 0 < mask.mean() < 1
  np.testing.assert_allclose(pred, np.asarray(out["pred"])[valid], atol=1e-5)
  np.testing.assert_array_equal(
    np.where(mask[..., None], 0.0, images), np.asarray(out["inputs"])[valid]
  )
  # The whole eval split: training's final psnr_full at this step.
  psnr = metrics.reconstruction_metrics(pred, images, mask)["psnr_full"]
  assert final["num_images"] == len(images)
  assert float(np.mean(psnr)) == pytest.approx(final["psnr_full"], abs=1e-4)


def test_render_at_training_resolution_equals_reconstruct(run, eval_batch):
  _, config, _, m = run
  images = eval_batch["image"][:5]
  r = config.resolution
  pred, _ = m.reconstruct(images, mask=None)
  # A chunk that does not divide the grid: padding is dropped.
  rendered = m.render(images, r, r, chunk=100)
  np.testing.assert_allclose(rendered, pred, atol=1e-5)
  pred_masked, mask = m.reconstruct(images, mask="random")
  np.testing.assert_allclose(m.render(images, r, r, mask=mask), pred_masked, atol=1e-5)
  big = m.render(images, 2 * r, 2 * r + 6)
  assert big.shape == (5, 2 * r, 2 * r + 6, 3) and big.dtype == np.float32
  assert np.isfinite(big).all()


def test_embedding_shapes_per_kind_and_determinism(run, eval_batch):
  _, config, _, m = run
  images = np.concatenate([eval_batch["image"]] * 2)[:11]  # more than one chunk
  model = m.model
  groups = sum(model.groups)
  mod_dim = sum(fan_in * g for (fan_in, _), g in zip(model.inr_shapes, model.groups))
  want = {
    "data_mean": config.model.dim,
    "weight_tokens": groups * config.model.dim,
    "weight_mean": config.model.dim,
    "modulations": mod_dim,
  }
  for kind, dim in want.items():
    z = m.embed(images, kind=kind)
    assert z.shape == (11, dim) and z.dtype == np.float32, kind
    assert np.isfinite(z).all()
  z = m.embed(images)
  np.testing.assert_array_equal(z, m.embed(images))
  np.testing.assert_allclose(m.embed(images[8:]), z[8:], atol=1e-5)  # chunking
  masked = m.embed(images, mask="random", seed=3)
  np.testing.assert_array_equal(masked, m.embed(images, mask="random", seed=3))
  assert not np.allclose(masked, z)
  explicit = m.masks(images, mask="random", seed=3)
  np.testing.assert_array_equal(m.embed(images, mask=explicit), masked)
  assert not np.array_equal(explicit, m.masks(images, mask="random", seed=4))


def test_uint8_images_and_jax_arrays_are_accepted(run, eval_batch):
  _, _, _, m = run
  images = eval_batch["image"][:3]
  as_uint8 = np.round(images * 255).astype(np.uint8)
  np.testing.assert_allclose(m.embed(as_uint8), m.embed(as_uint8 / 255.0), atol=1e-6)
  np.testing.assert_array_equal(m.embed(jax.numpy.asarray(images)), m.embed(images))


def test_checkpoint_directory_on_one_device(run, eval_batch):
  workdir, _, _, m = run
  one = minr_jax.load(os.path.join(workdir, "checkpoints", "2"), devices=1)
  assert one.step == 2 and one.workdir == workdir
  assert one.mesh.devices.size == 1
  assert {d for leaf in jax.tree.leaves(one.params) for d in leaf.devices()} == {jax.devices()[0]}
  images = eval_batch["image"][:4]
  np.testing.assert_allclose(one.reconstruct(images)[0], m.reconstruct(images)[0], atol=1e-5)
  np.testing.assert_allclose(
    one.embed(images, kind="modulations"), m.embed(images, kind="modulations"), atol=1e-5
  )
  assert minr_jax.load(os.path.join(workdir, "checkpoints"), devices=1).step == 2


def test_load_errors_name_the_problem(run, tmp_path, eval_batch):
  workdir, _, _, m = run
  with pytest.raises(ConfigError, match="does not exist"):
    minr_jax.load(str(tmp_path / "nowhere"))
  with pytest.raises(ConfigError, match="config.json does not exist"):
    minr_jax.load(str(tmp_path))
  with pytest.raises(ConfigError, match="no checkpoint 7"):
    minr_jax.load(workdir, step=7)
  with pytest.raises(ConfigError, match="contradicts"):
    minr_jax.load(os.path.join(workdir, "checkpoints", "2"), step=4)
  with pytest.raises(ConfigError, match="kind="):
    m.embed(eval_batch["image"], kind="pixels")
  with pytest.raises(ConfigError, match="images must be"):
    m.embed(eval_batch["image"][:, :8])
  with pytest.raises(ConfigError, match="mask must be"):
    m.embed(eval_batch["image"], mask=np.zeros((2, 3, 3), bool))


def test_a_config_of_another_model_is_refused(run, tmp_path):
  workdir, _, _, _ = run
  copy = str(tmp_path / "edited")
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("tensorboard", "images"))
  with open(os.path.join(copy, "config.json")) as f:
    config = json.load(f)
  config["model"]["dim"] = 48
  with open(os.path.join(copy, "config.json"), "w") as f:
    json.dump(config, f)
  # Each checkpoint carries the config it was trained with: an edited config.json
  # does not change what it loads.
  assert minr_jax.load(copy).config.model.dim == 32
  # A checkpoint saved before configs were (no config item, no checksums) is built
  # from config.json, whose model must match the checkpoint's.
  for step in os.listdir(os.path.join(copy, "checkpoints")):
    shutil.rmtree(os.path.join(copy, "checkpoints", step, "config"))
    os.remove(os.path.join(copy, "checkpoints", step, "minr_checksums.json"))
  before = sorted(os.listdir(os.path.join(copy, "checkpoints")))
  with pytest.raises(ConfigError, match="different model"):
    minr_jax.load(copy)
  assert sorted(os.listdir(os.path.join(copy, "checkpoints"))) == before


def test_embed_command_writes_deterministic_npz_and_array_record(run, tmp_path):
  workdir, config, _, m = run
  folder = config.dataset.path
  out = str(tmp_path / "val.npz")
  summary = embed.run(
    workdir, f"image_folder:{folder}", out, split="eval", kind="weight_mean", progress=False
  )
  assert summary["num_images"] == 6 and summary["has_labels"]
  with np.load(out) as f:
    assert {"embeddings", "indices", "ids", "labels", "kind", "step"} <= set(f.files)
    emb, labels, ids = f["embeddings"], f["labels"], f["ids"]
    assert emb.shape == (6, config.model.dim) and emb.dtype == np.float32
    np.testing.assert_array_equal(f["indices"], np.arange(6))
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(i.startswith(("val/a/", "val/b/")) for i in ids.tolist())
    assert str(f["kind"]) == "weight_mean" and int(f["step"]) == 2
  # The same numbers as the API on training's eval images (same order).
  batch = next(iter(data.make_eval_batches(config)))
  np.testing.assert_allclose(
    emb, m.embed(batch["image"][batch["valid"]], kind="weight_mean"), atol=1e-5
  )
  again = str(tmp_path / "again.npz")
  embed.run(workdir, f"image_folder:{folder}", again, kind="weight_mean", progress=False)
  assert open(out, "rb").read() == open(again, "rb").read()

  records = str(tmp_path / "train.array_record")
  embed.run(
    workdir,
    f"image_folder:{folder}",
    records,
    split="train",
    kind="weight_mean",
    masked=True,
    max_images=5,
    batch_size=4,
    progress=False,
  )
  read = embed.read_embeddings(records)
  assert read["embeddings"].shape == (5, config.model.dim)
  np.testing.assert_array_equal(read["indices"], np.arange(5))
  assert read["labels"] is not None and read["kind"] == "weight_mean"
  with pytest.raises(ConfigError, match="must end in"):
    embed.run(workdir, "demo", str(tmp_path / "x.csv"), progress=False)


def test_embed_command_line_reports_errors_in_one_line(run, tmp_path):
  workdir, _, _, _ = run
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "minr_jax.embed",
      f"--workdir={workdir}",
      "--dataset=demo",
      "--kind=pixels",
      f"--output={tmp_path / 'x.npz'}",
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert result.returncode == 1, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: --kind='pixels'")
  assert not os.path.exists(tmp_path / "x.npz")


def test_import_stays_light():
  code = (
    "import sys, minr_jax; assert 'jax' not in sys.modules, 'jax imported';"
    "assert callable(minr_jax.load); assert 'jax' in sys.modules; print('ok')"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
  )
  assert result.stdout.strip() == "ok", result.stderr
