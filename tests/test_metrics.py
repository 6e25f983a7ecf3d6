"""Tests for minr_jax.metrics: hand-computed values and host-side writers."""

import glob
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from minr_jax import metrics


def _images(b=2, h=4, w=5, c=3, seed=0):
  """Returns a random float32 [B, H, W, C] batch in [0, 1]."""
  return np.random.default_rng(seed).uniform(size=(b, h, w, c)).astype(
      np.float32)


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
  np.testing.assert_allclose(after["psnr_masked"], before["psnr_masked"],
                             rtol=1e-6)
  assert after["psnr_full"][0] < before["psnr_full"][0] - 0.1
  # Pasting hides the visible-pixel change too.
  np.testing.assert_allclose(after["psnr_pasted"], before["psnr_pasted"],
                             rtol=1e-6)
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
  np.testing.assert_allclose(out["psnr_masked"],
                             [-10 * math.log10(expected_mse)], atol=1e-4)
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
  target = np.array([[[[0.2, 1.0], [0.9, 0.9], [0.4, 0.0], [0.1, 0.1]]]],
                    np.float32)
  mask = np.array([[[False, True, False, True]]])
  filled = np.asarray(metrics.mean_colour_fill(target, mask))
  expected = np.array([[[[0.2, 1.0], [0.3, 0.5], [0.4, 0.0], [0.3, 0.5]]]],
                      np.float32)
  np.testing.assert_allclose(filled, expected, atol=1e-6)


def test_mean_colour_fill_is_per_image_and_handles_all_masked():
  target = np.stack([np.full((2, 2, 3), 0.2), np.full((2, 2, 3), 0.8)]).astype(
      np.float32)
  mask = np.array([[[True, False], [False, False]],
                   [[True, True], [True, True]]])
  filled = np.asarray(metrics.mean_colour_fill(target, mask))
  np.testing.assert_allclose(filled[0], 0.2, atol=1e-6)  # Own mean, not 0.5.
  np.testing.assert_allclose(filled[1], 0.5, atol=1e-6)  # Nothing visible.


def test_masked_input_and_baseline_psnr():
  target = np.full((1, 1, 4, 1), 0.5, np.float32)
  mask = np.array([[[True, False, False, False]]])
  masked = np.asarray(metrics.masked_input(target, mask))
  np.testing.assert_array_equal(masked[0, 0, :, 0], [0.0, 0.5, 0.5, 0.5])
  out = metrics.reconstruction_metrics(target, target, mask)
  # MSE of the masked input: 0.25 on 1 of 4 pixels -> 0.0625.
  np.testing.assert_allclose(out["psnr_full_masked_input"],
                             [-10 * math.log10(0.0625)], atol=1e-4)
  # Mean fill of a constant image is exact.
  np.testing.assert_allclose(out["psnr_full_mean_fill"], [100.0], atol=1e-3)


def test_reconstruction_metrics_jit_matches_eager():
  target = _images(b=3)
  mask = _mask(b=3)
  pred = _images(b=3, seed=7)
  eager = metrics.reconstruction_metrics(pred, target, mask)
  jitted = jax.jit(metrics.reconstruction_metrics)(pred, target, mask)
  assert set(jitted) == {
      "psnr_full", "psnr_masked", "psnr_pasted", "psnr_full_mean_fill",
      "psnr_full_masked_input", "mask_fraction"}
  for name in eager:
    assert jitted[name].shape == (3,), name
    assert jitted[name].dtype == jnp.float32, name
    np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-5,
                               err_msg=name)
  np.testing.assert_allclose(jitted["mask_fraction"], mask.mean(axis=(1, 2)),
                             rtol=1e-6)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError):
    metrics.reconstruction_metrics(_images(), _images(), np.zeros((2, 4), bool))


# ------------------------------ host-side writers -----------------------------


def test_jsonl_round_trip_with_truncated_last_line(tmp_path):
  with metrics.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write(10, "train", {"loss": 0.5, "psnr": np.float32(20.25)})
    writer.write(20, "eval", {"psnr_full": jnp.float32(18.5)},
                 dataset="celeba")
    # Each line is flushed: readable while the writer is still open.
    assert len(metrics.read_metrics(str(tmp_path / "metrics.jsonl"))) == 2
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 30, "split": "tra')  # Killed mid-write.
  records = metrics.read_metrics(str(path))
  assert records == [
      {"step": 10, "split": "train", "loss": 0.5, "psnr": 20.25},
      {"step": 20, "split": "eval", "dataset": "celeba", "psnr_full": 18.5},
  ]
  assert isinstance(records[0]["psnr"], float)


def test_reopening_drops_partial_line_and_appends(tmp_path):
  with metrics.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write(1, "train", {"loss": 1.0})
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 2, "spl')
  with metrics.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write(2, "train", {"loss": 0.5})
  assert [r["step"] for r in metrics.read_metrics(str(path))] == [1, 2]
  assert path.read_text().count("\n") == 2


def test_read_metrics_raises_on_corrupt_middle_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"ste\n{"step": 2}\n')
  with pytest.raises(ValueError):
    metrics.read_metrics(str(path))


def test_write_rejects_reserved_names(tmp_path):
  with metrics.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    with pytest.raises(ValueError):
      writer.write(1, "train", {"step": 3.0})


def test_tensorboard_event_file_created(tmp_path):
  with metrics.MetricWriter(str(tmp_path)) as writer:
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
  with metrics.MetricWriter(str(workdir), enabled=False) as writer:
    writer.write(1, "train", {"loss": 0.1}, dataset="x")
  assert not workdir.exists()


def test_save_image_grid_size_and_content(tmp_path):
  n, h, w = 3, 8, 10
  red = np.zeros((n, h, w, 3), np.float32)
  red[..., 0] = 1.0
  blue = np.zeros((n, h, w, 3), np.float32)
  blue[..., 2] = 1.5  # Out of range: clipped for display.
  path = tmp_path / "sub" / "dir" / "grid.png"
  metrics.save_image_grid(str(path), [red, blue], ["pred", "truth"],
                          max_rows=2)
  img = np.asarray(Image.open(path).convert("RGB"))
  scale = math.ceil(96 / h)  # 12 -> cells 96 x 120.
  cell_h, cell_w = h * scale, w * scale
  gap, title = metrics.GRID_GAP, metrics.GRID_TITLE_HEIGHT
  assert img.shape == (title + 2 * cell_h + gap, 2 * cell_w + gap, 3)
  assert metrics.image_grid_size(2, 2, h, w, True) == (img.shape[1],
                                                       img.shape[0])
  # Cell contents, and the white gap between columns.
  np.testing.assert_array_equal(img[title + 5, 5], [255, 0, 0])
  np.testing.assert_array_equal(img[title + cell_h + gap + 5, cell_w + gap + 5],
                                [0, 0, 255])
  np.testing.assert_array_equal(img[title + 5, cell_w], [255, 255, 255])
  # Title strip has some dark text pixels.
  assert img[:title].min() < 128
  # No temp files left behind.
  assert os.listdir(path.parent) == ["grid.png"]


def test_save_image_grid_without_titles_large_images(tmp_path):
  cols = [np.full((2, 100, 50, 3), 0.5, np.float32)] * 3
  path = tmp_path / "g.png"
  metrics.save_image_grid(str(path), cols)
  with Image.open(path) as img:
    assert img.size == (3 * 50 + 2 * metrics.GRID_GAP,
                        2 * 100 + metrics.GRID_GAP)


def test_save_image_grid_rejects_mismatched_columns(tmp_path):
  with pytest.raises(ValueError):
    metrics.save_image_grid(str(tmp_path / "g.png"),
                            [np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 5, 3))])


def test_format_progress():
  line = metrics.format_progress(120, 2000, 0.012345, 19.123, 38.24, 62.0)
  assert line.startswith("step 120/2000 (6%)")
  assert "loss 0.01234" in line or "loss 0.01235" in line
  assert "psnr 19.12 dB" in line
  assert "38.2 img/s" in line
  assert "elapsed 1m02s" in line
  # ETA = 62 s / 120 steps * 1880 steps = 971.3 s.
  assert line.endswith("ETA 16m11s")
  start = metrics.format_progress(0, 10, None, None, None, 0.0)
  assert "ETA ?" in start and "loss" not in start


def test_format_duration():
  assert metrics.format_duration(5) == "5s"
  assert metrics.format_duration(62) == "1m02s"
  assert metrics.format_duration(3723) == "1h02m03s"
  assert metrics.format_duration(float("nan")) == "?"
