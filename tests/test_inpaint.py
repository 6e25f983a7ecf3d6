"""minr_jax.inpaint and Model.inpaint: photos of any size, chosen masks, the command."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from helpers import run_at_once, smooth_image
from PIL import Image

import minr_jax
from minr_jax import inpaint as inpaint_command
from minr_jax import metrics, similarity, writers
from minr_jax.config import ConfigError
from minr_jax.inference import inpaint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained", "celeba64")


@pytest.fixture(scope="module")
def model():
  return minr_jax.load(PRETRAINED)


def photo(height, width, seed=0):
  return smooth_image(np.random.default_rng(seed), height, width)


# ------------------------------------------------------------------ masks ---


@pytest.mark.parametrize(
  "text, message",
  [
    ("", "empty"),
    ("nonsense", "is not FILE.png"),
    ("1,2,3", "is not FILE.png"),
    ("1,2,3,x", "box value 'x'"),
    ("0.1,0.2,1.5,0.9", "fraction 1.5 is above 1"),
    ("random", "give a ratio"),
    ("random:abc", "is not a number"),
    ("random:0", "must be in"),
    ("random:1.5", "must be in"),
    ("random:0.5:colour=3", "is not seed=N or grid=N"),
    ("random:0.5:grid=0", "grid must be positive"),
  ],
)
def test_bad_mask_specs_are_one_line_errors(text, message):
  with pytest.raises(ConfigError, match=message) as e:
    inpaint.parse_mask(text)
  assert "\n" not in str(e.value)


def test_box_in_pixels_and_in_fractions():
  m = inpaint.photo_mask("10,5,30,20", 40, 50)
  assert m.shape == (40, 50) and m.sum() == 20 * 15
  assert m[5:20, 10:30].all() and not m[:5].any() and not m[:, 30:].any()
  assert np.array_equal(inpaint.photo_mask("box:10,5,30,20", 40, 50), m)
  f = inpaint.photo_mask("0.25,0.25,0.75,0.75", 40, 80)
  assert f.sum() == 20 * 40 and f[10:30, 20:60].all()
  with pytest.raises(ConfigError, match="outside the 50x40 image"):
    inpaint.photo_mask("10,5,60,20", 40, 50)


def test_strategy_masks_are_cells_of_the_photo_fixed_by_seed_and_index():
  a = inpaint.photo_mask("random_exact:0.75:seed=3", 37, 91, index=0, default_grid=8)
  assert a.shape == (37, 91)
  rows = np.arange(37) * 8 // 37
  cols = np.arange(91) * 8 // 91
  cells = np.zeros((8, 8), bool)
  cells[rows[:, None], cols[None, :]] = a
  assert cells.sum() == 48  # exactly 75% of the 64 cells
  assert np.array_equal(a, cells[rows[:, None], cols[None, :]])  # constant per cell
  assert np.array_equal(a, inpaint.photo_mask("random_exact:0.75:seed=3", 37, 91, 0, 8))
  assert not np.array_equal(a, inpaint.photo_mask("random_exact:0.75:seed=3", 37, 91, 1, 8))
  assert not np.array_equal(a, inpaint.photo_mask("random_exact:0.75:seed=4", 37, 91, 0, 8))
  g4 = inpaint.photo_mask("center:0.25:grid=4", 40, 40)
  assert g4.sum() == 400 and g4[10:30, 10:30].all()


def test_png_mask_white_is_hidden(tmp_path):
  pixels = np.zeros((20, 30), np.uint8)
  pixels[2:8, 3:9] = 255
  Image.fromarray(pixels).save(tmp_path / "m.png")
  arg = inpaint.parse_mask(str(tmp_path / "m.png"))
  assert arg.kind == "file"
  assert np.array_equal(inpaint.photo_mask(arg, 20, 30), pixels > 127)


@pytest.mark.parametrize(
  "mask, message",
  [
    (np.ones((10, 12), bool), "is 12x10 but the image is 13x10"),
    (np.zeros((10, 13), bool), "hides no pixel"),
    (np.ones((10, 13), bool), "hides every pixel"),
  ],
)
def test_check_mask_errors(mask, message):
  with pytest.raises(ConfigError, match=message):
    inpaint.check_mask(mask, 10, 13, "the image")


# ------------------------------------------------------------- resampling ---


def test_area_matrix_rows_sum_to_one_and_are_exact():
  for src, dst in ((89, 64), (37, 64), (481, 64), (64, 64)):
    a = inpaint.area_matrix(src, dst)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
  np.testing.assert_array_equal(inpaint.area_matrix(64, 64), np.eye(64))
  np.testing.assert_allclose(inpaint.area_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])


def test_hidden_pixels_never_reach_the_model():
  rgb = photo(109, 89).astype(np.float32) / 255
  mask = inpaint.photo_mask("0.2,0.3,0.7,0.6", 109, 89)
  x, m = inpaint.to_model_grid(rgb, mask, 64, 8)
  changed = np.where(mask[..., None], 1.0 - rgb, rgb)  # other values under the hole
  x2, m2 = inpaint.to_model_grid(changed, mask, 64, 8)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(m, m2)
  assert m.reshape(8, 8, 8, 8).std(axis=(1, 3)).max() == 0  # whole 8x8 patches
  assert 0 < m.mean() < 1 and not x[m].any()


def test_at_the_model_resolution_inpaint_is_reconstruct_pasted(model):
  rgb = photo(64, 64).astype(np.float32) / 255
  mask = np.zeros((64, 64), bool)
  mask[16:40, 8:32] = True  # patch-aligned
  pred, _ = model.reconstruct(rgb[None], mask=mask)
  r = inpaint.inpaint(model, rgb, mask)
  np.testing.assert_allclose(
    r.minr, np.where(mask[..., None], np.clip(pred[0], 0, 1), rgb), atol=1e-5
  )
  np.testing.assert_array_equal(r.model_mask, mask)


# ---------------------------------------------------------------- inpaint ---


@pytest.mark.parametrize("shape", [(37, 91, 3), (300, 17), (300, 17, 1), (45, 60, 4), (23, 29, 2)])
def test_odd_sizes_and_modes_keep_visible_pixels_exactly(model, shape):
  rgb = photo(shape[0], shape[1], seed=len(shape))
  image = rgb[..., 0] if len(shape) == 2 else rgb[..., : shape[-1]]
  if len(shape) == 3 and shape[-1] in (2, 4):
    colour = rgb[..., : shape[-1] - 1]
    image = np.concatenate([colour, np.full(shape[:2] + (1,), 200, np.uint8)], -1)
  assert image.shape == shape
  mask = inpaint.photo_mask("0.2,0.25,0.6,0.8", shape[0], shape[1])
  filled = model.inpaint(image, mask)
  assert filled.shape == image.shape and filled.dtype == np.float32
  out = np.round(filled * 255).astype(np.uint8)
  np.testing.assert_array_equal(out[~mask], image[~mask])  # full resolution, unchanged
  assert not np.array_equal(out[mask], image[mask])
  if image.ndim == 2 or image.shape[-1] <= 2:  # greyscale in, greyscale fill and MINR column
    r = inpaint.inpaint(model, image, mask, with_baselines=False)
    np.testing.assert_array_equal(r.minr[..., 0], r.minr[..., 2])
  if len(shape) == 3 and shape[-1] in (2, 4):
    np.testing.assert_array_equal(out[..., -1], image[..., -1])  # alpha kept everywhere


def test_result_has_baselines_and_hidden_region_psnr(model):
  image = photo(50, 70)
  r = inpaint.inpaint(model, image, "random:0.75:seed=1")
  fills = {"minr", "interpolation", "mean_fill", "telea", "navier_stokes", "biharmonic"}
  assert set(r.psnr) == set(r.ssim) == set(r.lpips) == fills
  rgb = image.astype(np.float32) / 255
  for fill in (r.minr, r.interpolation, r.mean_fill, *r.baselines.values()):
    assert fill.shape == (50, 70, 3)
    np.testing.assert_array_equal(fill[~r.mask], rgb[~r.mask])
  assert r.psnr["interpolation"] == pytest.approx(inpaint.hidden_psnr(r.interpolation, rgb, r.mask))
  assert r.psnr["telea"] == pytest.approx(inpaint.hidden_psnr(r.baselines["telea"], rgb, r.mask))
  # SSIM and LPIPS over the whole photo, as similarity computes them.
  assert r.ssim["telea"] == pytest.approx(
    float(similarity.ssim(r.baselines["telea"][None], rgb[None])[0]), abs=1e-5
  )
  assert r.lpips["minr"] == pytest.approx(
    float(similarity.lpips(r.minr[None], rgb[None])[0]), abs=1e-5
  )
  assert all(0 < v <= 1 for v in r.ssim.values()) and all(v >= 0 for v in r.lpips.values())
  assert 5 < r.psnr["minr"] < 60
  small = inpaint.inpaint(model, photo(24, 30), "random:0.75:seed=1")
  assert small.lpips == {} and set(small.ssim) == fills  # LPIPS needs 31 px a side


def test_tiles_blend_and_keep_visible_pixels(model):
  image = photo(150, 220, seed=5)
  mask = inpaint.photo_mask("random:0.5:seed=2", 150, 220)
  resize = inpaint.inpaint(model, image, mask)
  tiles = inpaint.inpaint(model, image, mask, tile=96)
  assert tiles.filled.shape == image.shape
  np.testing.assert_array_equal(tiles.filled[~mask], resize.filled[~mask])
  assert not np.allclose(tiles.filled[mask], resize.filled[mask])
  other = photo(120, 100, seed=6)
  other_mask = inpaint.photo_mask("0.1,0.2,0.6,0.9", 120, 100)
  both = inpaint.inpaint_many(model, [image, other], [mask, other_mask], tile=96)
  alone = inpaint.inpaint(model, other, other_mask, tile=96)
  np.testing.assert_allclose(both[0].filled, tiles.filled, atol=1e-6)
  np.testing.assert_allclose(both[1].filled, alone.filled, atol=1e-6)
  np.testing.assert_array_equal(both[1].model_mask, alone.model_mask)
  assert inpaint.tile_starts(220, 96) == [0, 41, 83, 124]
  assert inpaint.tile_starts(50, 96) == [0]


def test_python_api_errors(model):
  with pytest.raises(ConfigError, match="is 12x10 but image 0 is 13x10"):
    model.inpaint(photo(10, 13), np.ones((10, 12), bool))
  with pytest.raises(ConfigError, match="hides no pixel"):
    model.inpaint(photo(10, 13), np.zeros((10, 13), bool))
  with pytest.raises(ConfigError, match="hides every pixel"):
    model.inpaint(photo(10, 13), "0,0,13,10")
  with pytest.raises(ConfigError, match="tile must be"):
    model.inpaint(photo(10, 13), "0,0,5,5", tile=-1)
  with pytest.raises(ConfigError, match="finite and in"):
    model.inpaint(np.full((10, 13, 3), np.nan, np.float32), "0,0,5,5")
  with pytest.raises(ConfigError, match=r"values in \[0, 2\]"):
    model.inpaint(np.full((10, 13, 3), 2.0, np.float32) * (np.arange(13) > 0)[:, None], "0,0,5,5")


def test_multiscale_interpolation_fills_large_holes_from_their_border():
  x = np.zeros((1, 40, 40, 1), np.float32)
  x[:, :, 20:] = 1.0
  mask = np.zeros((1, 40, 40), bool)
  mask[:, 5:35, 5:35] = True
  single = np.asarray(metrics.interpolation_fill(x, mask, 1.0))
  multi = np.asarray(metrics.interpolation_fill_multiscale(x, mask, 1.0))
  reached = np.asarray(metrics.interpolation_fill(x, mask, 1.0) != single)  # all False
  assert not reached.any()
  near = np.zeros((40, 40), bool)
  near[5:9, 5:35] = True  # within 4 sigma of a visible pixel: identical
  np.testing.assert_allclose(multi[0, near], single[0, near], atol=1e-6)
  # Deep inside: left half dark, right half bright, not the flat mean 0.5.
  assert multi[0, 20, 8, 0] < 0.3 and multi[0, 20, 31, 0] > 0.7
  assert np.allclose(single[0, 20, 15:25, 0], 0.5)
  np.testing.assert_array_equal(multi[0, ~mask[0]], x[0, ~mask[0]])
  pair = np.asarray(metrics.interpolation_fill(x, mask, (1.0, 1.0)))
  np.testing.assert_array_equal(pair, single)


# ---------------------------------------------------------------- command ---


def _env() -> dict:
  return dict(
    os.environ,
    PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
  )


def _argv(*args) -> list[str]:
  return [sys.executable, "-m", "minr_jax.inpaint", *args]


def test_command_on_a_folder(tmp_path, capsys):
  folder = tmp_path / "photos"
  (folder / "sub").mkdir(parents=True)
  Image.fromarray(photo(37, 91)).save(folder / "a.png")
  Image.fromarray(photo(60, 45, seed=1)[..., 0]).save(folder / "sub" / "b.jpg")
  (folder / "notes.txt").write_text("not an image")
  out = tmp_path / "out"
  # inpaint_command.run is the command's body (its flags are tested above); one device, as
  # the command runs on a CPU.
  inpaint_command.run(PRETRAINED, str(folder), "random:0.75:seed=0", str(out), devices=1)
  stdout = capsys.readouterr().out
  assert "[1/2] a.png (91x37" in stdout and "[2/2] sub/b.jpg (45x60" in stdout
  with Image.open(out / "a_filled.png") as a, Image.open(out / "sub" / "b_filled.png") as b:
    assert (a.size, a.mode) == ((91, 37), "RGB") and (b.size, b.mode) == ((45, 60), "L")
    with Image.open(folder / "a.png") as src:
      hidden = inpaint.photo_mask("random:0.75:seed=0", 37, 91, 0, 8)
      np.testing.assert_array_equal(np.asarray(a)[~hidden], np.asarray(src)[~hidden])
  with Image.open(out / "a_compare.png") as c:
    assert c.size == writers.image_grid_size(1, 6, 37, 91, True)  # + Telea, biharmonic
  results = json.loads((out / "results.json").read_text())
  assert results["num_images"] == 2 and results["step"] == 6000
  fills = ("minr", "interpolation", "mean_fill", "telea", "navier_stokes", "biharmonic")
  assert set(results["mean"]) == {f"{m}_{f}" for m in ("psnr", "ssim", "lpips") for f in fills}


COMMAND_ERRORS = [
  (["--mask=1,2,3"], "error: --mask='1,2,3' is not FILE.png"),
  (["--mask=0,0,5,5", "--images=NOPE"], "error: --images=NOPE: no such file or folder"),
  (["--mask=0,0,500,5"], "reaches outside the 91x37 image"),
  (["--mask=0,0,91,37"], "hides every pixel of"),
  (["--mask=BAD_IMAGE"], "cannot read"),
  (["--mask=SMALL_PNG"], "the mask is 10x10 but"),
]


def test_command_errors_are_one_line(tmp_path):
  """Every case raises its ConfigError from the command's run before a model is loaded; one
  case also runs as the command, which prints it as one `error:` line (cli.run)."""
  Image.fromarray(photo(37, 91)).save(tmp_path / "a.png")
  (tmp_path / "bad.png").write_bytes(b"not a png")
  Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "small.png")
  cases = []
  for i, (args, message) in enumerate(COMMAND_ERRORS):
    kwargs = dict(images=str(tmp_path / "a.png"), output=str(tmp_path / f"out{i}"))
    for a in args:
      name, _, value = a[2:].partition("=")
      value = value.replace("BAD_IMAGE", str(tmp_path / "bad.png"))
      kwargs[name] = value.replace("SMALL_PNG", str(tmp_path / "small.png"))
    cases.append((kwargs, message))
  loads = []

  def load(*args, **kwargs):
    loads.append(args)
    raise AssertionError("a model was loaded")

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(inpaint_command.model_lib, "load", load)
    for kwargs, message in cases:
      with pytest.raises(ConfigError) as e:
        inpaint_command.run(PRETRAINED, progress=False, **kwargs)
      assert message.removeprefix("error: ") in str(e.value), (message, str(e.value))
  assert not loads  # refused before loading anything
  kwargs, message = cases[2]  # the box outside the image, through the command
  (p,) = run_at_once(
    [_argv(f"--workdir={PRETRAINED}", *(f"--{k}={v}" for k, v in kwargs.items()))],
    cwd=ROOT,
    env=_env(),
  )
  assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
  lines = p.stderr.strip().splitlines()
  assert message in lines[-1] and lines[-1].startswith("error: "), p.stderr[-2000:]
