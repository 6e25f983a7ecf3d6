"""Tests for minr_jax.metrics: hand-computed values and host-side writers."""

import glob
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from minr_jax import metrics, writers


def _images(b=2, h=4, w=5, c=3, seed=0):
  """Returns a random float32 [B, H, W, C] batch in [0, 1]."""
  return np.random.default_rng(seed).uniform(size=(b, h, w, c)).astype(np.float32)


def _mask(b=2, h=4, w=5, seed=1):
  """Returns a random bool [B, H, W] mask with at least one masked and one visible pixel."""
  m = np.random.default_rng(seed).uniform(size=(b, h, w)) < 0.5
  m[:, 0, 0] = True
  m[:, 0, 1] = False
  return m


# ------------------------------ pure jnp metrics ------------------------------


def test_psnr_of_known_mse():
  psnr = metrics.psnr_from_mse(jnp.array([0.01, 1.0, 0.001, 0.1]))
  np.testing.assert_allclose(psnr, [20.0, 0.0, 30.0, 10.0], atol=1e-4)


def test_psnr_perfect_prediction_is_finite_floor():
  x = _images()
  psnr = metrics.psnr_from_mse(metrics.per_image_mse(x, x))
  assert np.all(np.isfinite(psnr))
  np.testing.assert_allclose(psnr, 100.0, atol=1e-3)


def test_per_image_mse_hand_example():
  target = np.zeros((2, 1, 2, 1), np.float32)
  pred = np.array([[[[0.1], [0.3]]], [[[0.0], [0.0]]]], np.float32)
  mse = metrics.per_image_mse(pred, target)
  assert mse.shape == (2,)
  np.testing.assert_allclose(mse, [(0.01 + 0.09) / 2, 0.0], atol=1e-7)


def test_pred_is_not_clipped_for_psnr():
  target = np.ones((1, 2, 2, 1), np.float32)
  pred = target + 0.1  # Clipping to [0, 1] would make this perfect.
  out = metrics.reconstruction_metrics(pred, target, np.zeros((1, 2, 2), bool))
  np.testing.assert_allclose(out["psnr_full"], [20.0], atol=1e-3)


def test_psnr_masked_ignores_visible_pixels():
  target = _images()
  mask = _mask()
  pred = np.clip(target + 0.05, 0, 1)
  before = metrics.reconstruction_metrics(pred, target, mask)
  pred2 = pred.copy()
  assert not mask[0, 0, 1]  # A visible pixel.
  pred2[0, 0, 1] = 1.0 - target[0, 0, 1]
  after = metrics.reconstruction_metrics(pred2, target, mask)
  np.testing.assert_allclose(after["psnr_masked"], before["psnr_masked"], rtol=1e-6)
  assert after["psnr_full"][0] < before["psnr_full"][0] - 0.1
  # Pasting hides the visible-pixel change too.
  np.testing.assert_allclose(after["psnr_pasted"], before["psnr_pasted"], rtol=1e-6)
  # Changing a masked pixel does change psnr_masked.
  pred3 = pred.copy()
  assert mask[0, 0, 0]
  pred3[0, 0, 0] = 1.0 - target[0, 0, 0]
  changed = metrics.reconstruction_metrics(pred3, target, mask)
  assert changed["psnr_masked"][0] < before["psnr_masked"][0] - 0.1


def test_psnr_masked_hand_example():
  target = np.zeros((1, 1, 3, 2), np.float32)
  pred = np.zeros((1, 1, 3, 2), np.float32)
  pred[0, 0, 0] = [0.1, 0.3]  # Masked pixel: squared errors 0.01 + 0.09.
  pred[0, 0, 2] = [0.9, 0.9]  # Visible pixel: must be ignored.
  mask = np.array([[[True, True, False]]])
  out = metrics.reconstruction_metrics(pred, target, mask)
  expected_mse = (0.01 + 0.09) / (2 * 2)  # 2 masked pixels x 2 channels.
  np.testing.assert_allclose(out["psnr_masked"], [-10 * math.log10(expected_mse)], atol=1e-4)
  np.testing.assert_allclose(out["mask_fraction"], [2 / 3], atol=1e-6)


def test_no_masked_pixel_gives_floor_not_nan():
  target = _images(b=1)
  pred = np.clip(target + 0.2, 0, 1)
  mask = np.zeros(target.shape[:3], bool)
  out = metrics.reconstruction_metrics(pred, target, mask)
  for name, value in out.items():
    assert np.all(np.isfinite(value)), name
  np.testing.assert_allclose(out["psnr_masked"], [100.0], atol=1e-3)
  np.testing.assert_allclose(out["mask_fraction"], [0.0])
  # Nothing masked: pasting and the baselines reproduce the target exactly.
  np.testing.assert_allclose(out["psnr_pasted"], [100.0], atol=1e-3)
  np.testing.assert_allclose(out["psnr_full_mean_fill"], [100.0], atol=1e-3)
  np.testing.assert_allclose(out["psnr_full_masked_input"], [100.0], atol=1e-3)


def test_paste_visible_makes_visible_pixels_exact():
  target = _images()
  mask = _mask()
  pred = _images(seed=5)
  pasted = np.asarray(metrics.paste_visible(pred, target, mask))
  np.testing.assert_array_equal(pasted[~mask], target[~mask])
  np.testing.assert_array_equal(pasted[mask], pred[mask])


def test_mean_colour_fill_hand_example():
  # One image 1x4, 2 channels; pixels 0 and 2 visible.
  target = np.array([[[[0.2, 1.0], [0.9, 0.9], [0.4, 0.0], [0.1, 0.1]]]], np.float32)
  mask = np.array([[[False, True, False, True]]])
  filled = np.asarray(metrics.mean_colour_fill(target, mask))
  expected = np.array([[[[0.2, 1.0], [0.3, 0.5], [0.4, 0.0], [0.3, 0.5]]]], np.float32)
  np.testing.assert_allclose(filled, expected, atol=1e-6)


def test_mean_colour_fill_is_per_image_and_handles_all_masked():
  target = np.stack([np.full((2, 2, 3), 0.2), np.full((2, 2, 3), 0.8)]).astype(np.float32)
  mask = np.array([[[True, False], [False, False]], [[True, True], [True, True]]])
  filled = np.asarray(metrics.mean_colour_fill(target, mask))
  np.testing.assert_allclose(filled[0], 0.2, atol=1e-6)  # Own mean, not 0.5.
  np.testing.assert_allclose(filled[1], 0.5, atol=1e-6)  # Nothing visible.


def test_masked_input_and_baseline_psnr():
  target = np.full((1, 1, 4, 1), 0.5, np.float32)
  mask = np.array([[[True, False, False, False]]])
  out = metrics.reconstruction_metrics(target, target, mask)
  # MSE of the masked input: 0.25 on 1 of 4 pixels -> 0.0625.
  np.testing.assert_allclose(out["psnr_full_masked_input"], [-10 * math.log10(0.0625)], atol=1e-4)
  # Mean fill of a constant image is exact.
  np.testing.assert_allclose(out["psnr_full_mean_fill"], [100.0], atol=1e-3)


def test_reconstruction_metrics_jit_matches_eager():
  target = _images(b=3)
  mask = _mask(b=3)
  pred = _images(b=3, seed=7)
  eager = metrics.reconstruction_metrics(pred, target, mask)
  jitted = jax.jit(metrics.reconstruction_metrics)(pred, target, mask)
  assert set(jitted) == {
    "psnr_full",
    "psnr_masked",
    "psnr_pasted",
    "psnr_full_mean_fill",
    "psnr_full_masked_input",
    "mask_fraction",
  }
  for name in eager:
    assert jitted[name].shape == (3,), name
    assert jitted[name].dtype == jnp.float32, name
    np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(jitted["mask_fraction"], mask.mean(axis=(1, 2)), rtol=1e-6)


def test_interpolation_key_only_when_asked_and_jit_matches_eager():
  target = _images(b=3, h=8, w=6)
  mask = _mask(b=3, h=8, w=6)
  pred = _images(b=3, h=8, w=6, seed=7)
  plain = metrics.reconstruction_metrics(pred, target, mask)
  assert "psnr_full_interpolation" not in plain
  fn = lambda p, t, m: metrics.reconstruction_metrics(p, t, m, interpolation_sigma=1.5)
  eager, jitted = fn(pred, target, mask), jax.jit(fn)(pred, target, mask)
  assert set(eager) == set(plain) | {"psnr_full_interpolation"}
  for name in plain:  # every existing value unchanged
    np.testing.assert_array_equal(eager[name], plain[name], err_msg=name)
  filled = metrics.interpolation_fill(target, mask, 1.5)
  np.testing.assert_allclose(
    eager["psnr_full_interpolation"],
    metrics.psnr_from_mse(metrics.per_image_mse(filled, target)),
    rtol=1e-6,
  )
  assert jitted["psnr_full_interpolation"].shape == (3,)
  assert jitted["psnr_full_interpolation"].dtype == jnp.float32
  np.testing.assert_allclose(
    jitted["psnr_full_interpolation"], eager["psnr_full_interpolation"], rtol=1e-5
  )


# ------------------------------ interpolation baseline -------------------------


def _smooth_images(b=2, h=32, w=32):
  """[B, H, W, 3] smooth colour gradients and waves in [0, 1] (one per image)."""
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  out = []
  for i in range(b):
    out.append(
      np.stack(
        [0.5 + 0.4 * np.sin(3 * xx + i), 0.5 + 0.3 * np.cos(2 * yy - i), 0.2 + 0.6 * xx * yy], -1
      )
    )
  return np.asarray(out, np.float32)


def _patch_mask(b, h, grid, ratio, seed=0):
  """A random [B, H, H] pixel mask of grid x grid patches, each hidden with prob ratio."""
  patches = np.random.default_rng(seed).uniform(size=(b, grid, grid)) < ratio
  side = h // grid
  return patches.repeat(side, axis=1).repeat(side, axis=2)


def test_interpolation_fill_shapes_and_dtype():
  target = _images(b=3, h=6, w=7)
  mask = _mask(b=3, h=6, w=7)
  filled = metrics.interpolation_fill(target, mask, 2.0)
  assert filled.shape == (3, 6, 7, 3) and filled.dtype == jnp.float32
  one_channel = metrics.interpolation_fill(target[..., :1], mask, 2.0)
  assert one_channel.shape == (3, 6, 7, 1)
  with pytest.raises(ValueError, match="sigma"):
    metrics.interpolation_fill(target, mask, 0.0)
  with pytest.raises(ValueError):
    metrics.interpolation_fill(target, mask[:, :5], 2.0)


def test_interpolation_fill_is_exact_on_a_constant_image():
  colours = np.array([[0.3, 0.7, 0.1], [0.5, 0.5, 0.5]], np.float32)
  target = np.broadcast_to(colours[:, None, None, :], (2, 16, 16, 3)).copy()
  mask = _patch_mask(2, 16, 4, 0.75, seed=3)
  assert mask.any() and (~mask).any()
  filled = np.asarray(metrics.interpolation_fill(target, mask, 2.0))
  np.testing.assert_allclose(filled, target, atol=1e-6, rtol=0)


def test_interpolation_fill_keeps_visible_pixels_and_changes_hidden_ones():
  target = _images(b=2, h=12, w=10)
  mask = _mask(b=2, h=12, w=10)
  filled = np.asarray(metrics.interpolation_fill(target, mask, 1.0))
  np.testing.assert_array_equal(filled[~mask], target[~mask])
  assert not np.allclose(filled[mask], target[mask])
  # A hidden pixel is a weighted mean of visible pixels: inside their range.
  for b in range(2):
    lo, hi = target[b][~mask[b]].min(0), target[b][~mask[b]].max(0)
    assert np.all(filled[b][mask[b]] >= lo - 1e-6) and np.all(filled[b][mask[b]] <= hi + 1e-6)


def test_interpolation_fill_by_hand_on_one_row():
  # 1 x 5 image, one channel; only pixels 0 and 4 visible, sigma 1, window 4 px.
  target = np.array([[[[0.0], [9.0], [9.0], [9.0], [1.0]]]], np.float32)
  mask = np.array([[[False, True, True, True, False]]])
  filled = np.asarray(metrics.interpolation_fill(target, mask, 1.0))[0, 0, :, 0]
  for j in (1, 2, 3):
    w0, w4 = math.exp(-0.5 * j**2), math.exp(-0.5 * (4 - j) ** 2)
    assert filled[j] == pytest.approx((0.0 * w0 + 1.0 * w4) / (w0 + w4), rel=1e-5)
  assert filled[0] == 0.0 and filled[4] == 1.0


def test_interpolation_beats_mean_fill_on_smooth_images():
  target = _smooth_images(b=3, h=32, w=32)
  mask = _patch_mask(3, 32, 8, 0.75, seed=1)
  out = metrics.reconstruction_metrics(
    target, target, mask, interpolation_sigma=metrics.interpolation_sigma(32, 8)
  )
  assert np.all(out["psnr_full_interpolation"] > out["psnr_full_mean_fill"] + 3.0), out


def test_interpolation_fill_with_nothing_visible_or_far_from_visible():
  target = np.stack([np.full((16, 16, 3), 0.2), np.full((16, 16, 3), 0.9)]).astype(np.float32)
  target[0, 0, 0] = [0.6, 0.6, 0.6]  # the only visible pixel of image 0
  mask = np.ones((2, 16, 16), bool)
  mask[0, 0, 0] = False
  filled = np.asarray(metrics.interpolation_fill(target, mask, 1.0))  # window 4 px
  assert np.all(np.isfinite(filled))
  np.testing.assert_allclose(filled[1], 0.5)  # nothing visible: grey
  # Within the window of the visible pixel: its colour; beyond: the image's
  # mean visible colour, which is the same pixel here.
  np.testing.assert_allclose(filled[0], 0.6, atol=1e-6)
  # Two visible pixels far apart: pixels out of reach of both get their mean.
  target2 = np.zeros((1, 1, 20, 1), np.float32)
  target2[0, 0, 0], target2[0, 0, 19] = 0.2, 0.8
  mask2 = np.ones((1, 1, 20), bool)
  mask2[0, 0, [0, 19]] = False
  row = np.asarray(metrics.interpolation_fill(target2, mask2, 1.0))[0, 0, :, 0]
  np.testing.assert_allclose(row[1:5], 0.2, atol=1e-6)
  np.testing.assert_allclose(row[5:15], 0.5, atol=1e-6)  # mean of 0.2 and 0.8
  np.testing.assert_allclose(row[15:19], 0.8, atol=1e-6)


def test_interpolation_sigma_is_a_quarter_patch():
  assert metrics.interpolation_sigma(64, 8) == 2.0
  assert metrics.interpolation_sigma(182, 14) == pytest.approx(13 / 4)
  assert isinstance(metrics.interpolation_sigma(64, 4), float)
  with pytest.raises(ValueError):
    metrics.interpolation_sigma(64, 0)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError):
    metrics.reconstruction_metrics(_images(), _images(), np.zeros((2, 4), bool))


# ------------------------------ host-side writers -----------------------------


def test_jsonl_round_trip_with_truncated_last_line(tmp_path):
  with writers.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write(10, "train", {"loss": 0.5, "psnr": np.float32(20.25)})
    writer.write(20, "eval", {"psnr_full": jnp.float32(18.5)}, dataset="celeba")
    # Each line is flushed: readable while the writer is still open.
    assert len(writers.read_metrics(str(tmp_path / "metrics.jsonl"))) == 2
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 30, "split": "tra')  # Killed mid-write.
  records = writers.read_metrics(str(path))
  assert records == [
    {"step": 10, "split": "train", "loss": 0.5, "psnr": 20.25},
    {"step": 20, "split": "eval", "dataset": "celeba", "psnr_full": 18.5},
  ]
  assert isinstance(records[0]["psnr"], float)


def test_reopening_drops_partial_line_and_appends(tmp_path):
  with writers.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write(1, "train", {"loss": 1.0})
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 2, "spl')
  with writers.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write(2, "train", {"loss": 0.5})
  assert [r["step"] for r in writers.read_metrics(str(path))] == [1, 2]
  assert path.read_text().count("\n") == 2


def test_read_metrics_raises_on_corrupt_middle_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"ste\n{"step": 2}\n')
  with pytest.raises(ValueError):
    writers.read_metrics(str(path))


def test_write_rejects_reserved_names(tmp_path):
  with writers.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    with pytest.raises(ValueError):
      writer.write(1, "train", {"step": 3.0})


def test_tensorboard_event_file_created(tmp_path):
  with writers.MetricWriter(str(tmp_path)) as writer:
    writer.write(5, "eval", {"psnr_full": 21.0}, dataset="ffhq")
    writer.write(5, "train", {"loss": 0.1})
  for split in ("eval", "train"):
    events = glob.glob(str(tmp_path / "tensorboard" / split / "events.out.*"))
    assert len(events) == 1, split
    assert os.path.getsize(events[0]) > 0
  # The dataset-prefixed tag is in the event file.
  eval_events = glob.glob(str(tmp_path / "tensorboard" / "eval" / "events.*"))
  with open(eval_events[0], "rb") as f:
    assert b"ffhq/psnr_full" in f.read()


def test_disabled_writer_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  with writers.MetricWriter(str(workdir), enabled=False) as writer:
    writer.write(1, "train", {"loss": 0.1}, dataset="x")
  assert not workdir.exists()


def test_save_image_grid_size_and_content(tmp_path):
  n, h, w = 3, 8, 10
  red = np.zeros((n, h, w, 3), np.float32)
  red[..., 0] = 1.0
  blue = np.zeros((n, h, w, 3), np.float32)
  blue[..., 2] = 1.5  # Out of range: clipped for display.
  path = tmp_path / "sub" / "dir" / "grid.png"
  writers.save_image_grid(str(path), [red, blue], ["pred", "truth"], max_rows=2)
  img = np.asarray(Image.open(path).convert("RGB"))
  scale = math.ceil(96 / h)  # 12 -> cells 96 x 120.
  cell_h, cell_w = h * scale, w * scale
  gap, title = writers.GRID_GAP, writers.GRID_TITLE_HEIGHT
  assert img.shape == (title + 2 * cell_h + gap, 2 * cell_w + gap, 3)
  assert writers.image_grid_size(2, 2, h, w, True) == (img.shape[1], img.shape[0])
  # Cell contents, and the white gap between columns.
  np.testing.assert_array_equal(img[title + 5, 5], [255, 0, 0])
  np.testing.assert_array_equal(img[title + cell_h + gap + 5, cell_w + gap + 5], [0, 0, 255])
  np.testing.assert_array_equal(img[title + 5, cell_w], [255, 255, 255])
  # Title strip has some dark text pixels.
  assert img[:title].min() < 128
  # No temp files left behind.
  assert os.listdir(path.parent) == ["grid.png"]


def test_save_image_grid_without_titles_large_images(tmp_path):
  cols = [np.full((2, 100, 50, 3), 0.5, np.float32)] * 3
  path = tmp_path / "g.png"
  writers.save_image_grid(str(path), cols)
  with Image.open(path) as img:
    assert img.size == (3 * 50 + 2 * writers.GRID_GAP, 2 * 100 + writers.GRID_GAP)


def test_save_image_grid_rejects_mismatched_columns(tmp_path):
  with pytest.raises(ValueError):
    writers.save_image_grid(
      str(tmp_path / "g.png"), [np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 5, 3))]
    )


def test_format_progress():
  line = writers.format_progress(120, 2000, 0.012345, 19.123, 38.24, 62.0)
  assert line.startswith("step 120/2000 (6%)")
  assert "loss 0.01234" in line or "loss 0.01235" in line
  assert "psnr 19.12 dB" in line
  assert "38.2 img/s" in line
  assert "elapsed 1m02s" in line
  # ETA = 62 s / 120 steps * 1880 steps = 971.3 s.
  assert line.endswith("ETA 16m11s")
  start = writers.format_progress(0, 10, None, None, None, 0.0)
  assert "ETA ?" in start and "loss" not in start


def test_format_duration():
  assert writers.format_duration(5) == "5s"
  assert writers.format_duration(62) == "1m02s"
  assert writers.format_duration(3723) == "1h02m03s"
  assert writers.format_duration(float("nan")) == "?"
