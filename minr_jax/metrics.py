"""Reconstruction metrics (pure jnp) and host-side writers (jsonl, TensorBoard, PNG).

Conventions: images are float [B, H, W, C] in [0, 1]; masks are bool
[B, H, W] with True = masked (hidden from the model), False = visible.

The jnp functions are jittable and return per-image values so that the caller
can average over valid (non-padding) images only. Everything below the
"Host side" line runs in Python on the host and never inside `jit`.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from minr_jax import paths

Array = jax.Array

# MSE floor: a perfect prediction gives -10 * log10(1e-10) = 100 dB, not inf.
MSE_FLOOR = 1e-10
# Mean colour used by `mean_colour_fill` for an image with no visible pixel.
EMPTY_FILL_VALUE = 0.5
# `interpolation_fill` cuts its Gaussian window at this many sigmas.
INTERPOLATION_TRUNCATE = 4.0


# ----------------------------------------------------------------------------
# Pure jnp metrics (jittable).
# ----------------------------------------------------------------------------


def _check_image_and_mask(images: Array, mask: Array) -> None:
  """Raises if images [B, H, W, C] and mask [B, H, W] shapes disagree."""
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  if mask.shape != images.shape[:3]:
    raise ValueError(f"mask must be [B, H, W] = {images.shape[:3]}, got shape {mask.shape}")


def per_image_mse(pred: Array, target: Array) -> Array:
  """[B, H, W, C] x2 -> [B] mean squared error over H, W, C (all pixels)."""
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
  err = pred.astype(jnp.float32) - target.astype(jnp.float32)
  return jnp.mean(jnp.square(err), axis=tuple(range(1, err.ndim)))


def psnr_from_mse(mse: Array) -> Array:
  """Any shape -> same shape PSNR in dB for peak 1: -10 log10(max(mse, floor))."""
  mse = jnp.asarray(mse, jnp.float32)
  return -10.0 * jnp.log10(jnp.maximum(mse, MSE_FLOOR))


def paste_visible(pred: Array, target: Array, mask: Array) -> Array:
  """[B, H, W, C] pred, target, [B, H, W] mask -> [B, H, W, C] with visible pixels from target."""
  _check_image_and_mask(target, mask)
  return jnp.where(mask.astype(bool)[..., None], pred, target)


def _visible_mean(x: Array, mask: Array) -> Array:
  """float [B, H, W, C], bool [B, H, W] -> [B, C] mean visible colour (EMPTY_FILL_VALUE if none)."""
  visible = (~mask)[..., None].astype(jnp.float32)  # [B, H, W, 1]
  total = jnp.sum(x * visible, axis=(1, 2))  # [B, C]
  count = jnp.sum(visible, axis=(1, 2))  # [B, 1]
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), EMPTY_FILL_VALUE)


def mean_colour_fill(target: Array, mask: Array) -> Array:
  """[B, H, W, C], [B, H, W] -> [B, H, W, C], masked pixels = mean visible colour (or 0.5)."""
  _check_image_and_mask(target, mask)
  mask = mask.astype(bool)
  x = target.astype(jnp.float32)
  mean = _visible_mean(x, mask)
  filled = jnp.where(mask[..., None], mean[:, None, None, :], x)
  return filled.astype(target.dtype)


def interpolation_sigma(resolution: int, mask_grid: int) -> float:
  """The Gaussian width in pixels for `interpolation_fill`: patch side / 4.

  A hidden patch of side p = resolution / mask_grid is filled from the
  visible pixels around it. With sigma = p / 4 the weights fall to
  exp(-8) ~ 3e-4 of their peak at one patch side, so a hidden pixel is
  filled from its nearest visible neighbours, not from the far side of the
  image, while the Gaussian is still wide enough (2 px for 8-px patches) to
  average away single-pixel noise. A lone hidden patch is then filled from
  its border; deep inside a large hidden region the fill falls back to the
  image's mean visible colour.
  """
  if resolution <= 0 or mask_grid <= 0:
    raise ValueError(f"resolution ({resolution}) and mask_grid ({mask_grid}) must be > 0")
  return float(resolution) / float(mask_grid) / 4.0


def _gaussian_matrix(size: int, sigma: float, truncate: float) -> np.ndarray:
  """[size, size] float32 weights exp(-(i - j)^2 / (2 sigma^2)), 0 beyond truncate * sigma.

  Computed in float64 and rounded once. Multiplying an image axis by it
  is a 1-D Gaussian convolution whose window is cut at the image border
  (pixels outside the image have no weight).
  """
  d = np.arange(size, dtype=np.float64)
  d = d[:, None] - d[None, :]
  w = np.exp(-0.5 * (d / sigma) ** 2)
  w[np.abs(d) > truncate * sigma] = 0.0
  return w.astype(np.float32)


def _sigma_pair(sigma) -> tuple[float, float]:
  """sigma (a number, or (rows, columns)) -> (sigma_rows, sigma_cols), each > 0."""
  pair = tuple(sigma) if isinstance(sigma, (tuple, list)) else (sigma, sigma)
  if len(pair) != 2 or not all(s > 0 for s in pair):
    raise ValueError(f"interpolation sigma must be > 0 pixels, got {sigma}")
  return float(pair[0]), float(pair[1])


def _normalised_convolution(x: Array, mask: Array, sigma, truncate: float) -> tuple[Array, Array]:
  """(G*(v x) / G*v [B, H, W, C], has_weight [B, H, W, 1]) for visible indicator v = ~mask."""
  sigma_rows, sigma_cols = _sigma_pair(sigma)
  visible = (~mask)[..., None].astype(jnp.float32)  # [B, H, W, 1]
  # Numerator channels and the weight channel go through the same products.
  stacked = jnp.concatenate([x * visible, visible], axis=-1)  # [B, H, W, C + 1]
  g_rows = jnp.asarray(_gaussian_matrix(x.shape[1], sigma_rows, truncate))
  g_cols = jnp.asarray(_gaussian_matrix(x.shape[2], sigma_cols, truncate))
  highest = jax.lax.Precision.HIGHEST  # no bfloat16 passes on TPU
  blurred = jnp.einsum("ij,bjwc->biwc", g_rows, stacked, precision=highest)
  blurred = jnp.einsum("kw,biwc->bikc", g_cols, blurred, precision=highest)
  numerator, weight = blurred[..., :-1], blurred[..., -1:]
  has_weight = weight > 0
  return numerator / jnp.where(has_weight, weight, 1.0), has_weight


def interpolation_fill(
  target: Array, mask: Array, sigma, truncate: float = INTERPOLATION_TRUNCATE
) -> Array:
  """[B, H, W, C], [B, H, W] -> [B, H, W, C]: hidden pixels from nearby visible ones.

  Normalised convolution, the classical inpainting baseline: each hidden
  pixel is the Gaussian-weighted mean (sigma in pixels, window cut at
  `truncate` * sigma) of the visible pixels around it, i.e. G*(v x) / G*v
  with v the visible indicator; visible pixels are returned unchanged. The
  Gaussian is separable, applied as one [H, H] and one [W, W] matrix. A
  hidden pixel with no visible pixel inside its window gets the image's
  mean visible colour, or EMPTY_FILL_VALUE (0.5) if nothing is visible.
  `sigma` must be a Python number, or a pair (rows, columns) for a
  Gaussian of another width along each axis (it fixes the static kernel).
  """
  _check_image_and_mask(target, mask)
  _sigma_pair(sigma)
  mask = mask.astype(bool)
  x = target.astype(jnp.float32)
  interpolated, has_weight = _normalised_convolution(x, mask, sigma, truncate)
  fallback = _visible_mean(x, mask)[:, None, None, :]
  hidden = jnp.where(has_weight, interpolated, fallback)
  return jnp.where(mask[..., None], hidden, x).astype(target.dtype)


def interpolation_fill_multiscale(
  target: Array, mask: Array, sigma, truncate: float = INTERPOLATION_TRUNCATE
) -> Array:
  """`interpolation_fill` for holes of any size: hidden pixels beyond the window widen it.

  Each hidden pixel takes the normalised convolution at `sigma` (a number or
  (rows, columns)) where its window holds a visible pixel, exactly as
  `interpolation_fill`; the others take it at 2 sigma, 4 sigma, ... (the
  first scale whose window reaches a visible pixel), so the middle of a
  large box is a smooth blend of the colours around it instead of the
  image's mean colour. Only an image with no visible pixel gets
  EMPTY_FILL_VALUE. Host-side loop over scales (not jittable as a whole).
  """
  _check_image_and_mask(target, mask)
  sigma_rows, sigma_cols = _sigma_pair(sigma)
  mask = jnp.asarray(mask).astype(bool)
  x = jnp.asarray(target).astype(jnp.float32)
  filled = _visible_mean(x, mask)[:, None, None, :] * jnp.ones_like(x)
  todo = jnp.ones(mask.shape + (1,), bool)  # hidden pixels not filled yet
  limit = 2.0 * max(x.shape[1], x.shape[2])
  scale = 1.0
  while True:
    interpolated, has_weight = _normalised_convolution(
      x, mask, (sigma_rows * scale, sigma_cols * scale), truncate
    )
    take = todo & has_weight
    filled = jnp.where(take, interpolated, filled)
    todo = todo & ~has_weight
    if not bool(jnp.any(todo & mask[..., None])) or min(sigma_rows, sigma_cols) * scale > limit:
      break
    scale *= 2.0
  return jnp.where(mask[..., None], filled, x).astype(jnp.asarray(target).dtype)


def masked_mse(pred: Array, target: Array, mask: Array) -> Array:
  """[B, H, W, C] x2, [B, H, W] -> [B] MSE over masked pixels only (0 if none masked)."""
  _check_image_and_mask(target, mask)
  mask = mask.astype(bool)
  sq = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  sq = jnp.sum(sq, axis=-1)  # [B, H, W], summed over channels.
  total = jnp.sum(jnp.where(mask, sq, 0.0), axis=(1, 2))  # [B]
  count = jnp.sum(mask, axis=(1, 2)).astype(jnp.float32) * target.shape[-1]
  return total / jnp.maximum(count, 1.0)


def reconstruction_metrics(
  pred: Array, target: Array, mask: Array, *, interpolation_sigma: float | None = None
) -> dict[str, Array]:
  """[B, H, W, C] pred, target, [B, H, W] mask -> dict of per-image [B] float32 metrics.

  Keys:
    psnr_full: PSNR of `pred` over the whole image (pred is not clipped).
    psnr_masked: PSNR over masked pixels only. An image with no masked pixel
      has masked MSE 0, hence the floor value (100 dB): weight it out with
      `mask_fraction > 0` when averaging (no NaN is ever produced).
    psnr_pasted: psnr_full of `paste_visible(pred, target, mask)`.
    psnr_full_mean_fill: psnr_full of `mean_colour_fill(target, mask)`, the
      trivial baseline.
    psnr_full_masked_input: psnr_full of the masked input (hidden pixels 0).
    psnr_full_interpolation (only with `interpolation_sigma`, in pixels; a
      Python number, static under jit):
      psnr_full of `interpolation_fill(target, mask, interpolation_sigma)`,
      the classical inpainting baseline; a model has learned more than local
      smoothness only where psnr_pasted beats it.
    mask_fraction: fraction of pixels that are masked, in [0, 1].
  """
  _check_image_and_mask(target, mask)
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} differ")
  mask = mask.astype(bool)
  masked_input = jnp.where(mask[..., None], jnp.zeros_like(target), target)
  out = {
    "psnr_full": psnr_from_mse(per_image_mse(pred, target)),
    "psnr_masked": psnr_from_mse(masked_mse(pred, target, mask)),
    "psnr_pasted": psnr_from_mse(per_image_mse(paste_visible(pred, target, mask), target)),
    "psnr_full_mean_fill": psnr_from_mse(per_image_mse(mean_colour_fill(target, mask), target)),
    "psnr_full_masked_input": psnr_from_mse(per_image_mse(masked_input, target)),
  }
  if interpolation_sigma is not None:
    out["psnr_full_interpolation"] = psnr_from_mse(
      per_image_mse(interpolation_fill(target, mask, interpolation_sigma), target)
    )
  out["mask_fraction"] = jnp.mean(mask.astype(jnp.float32), axis=(1, 2))
  return out


# ----------------------------------------------------------------------------
# Host side.
# ----------------------------------------------------------------------------

METRICS_FILENAME = "metrics.jsonl"
TENSORBOARD_DIRNAME = "tensorboard"
# With a URL workdir, metrics.jsonl and the TensorBoard files are uploaded at most
# this often (and on flush()/close()): an object store allows about one write
# per second per object, and every upload rewrites the whole object.
URL_FLUSH_EVERY_SECS = 15.0


def _drop_partial_last_line(path: str) -> None:
  """Truncates a file that does not end in a newline back to its last newline."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if not data or data.endswith(b"\n"):
      return
    f.truncate(data.rfind(b"\n") + 1)


class MetricWriter:
  """Appends scalars to `workdir/metrics.jsonl` and TensorBoard `workdir/tensorboard/<split>`.

  With `enabled=False` (non-zero JAX processes) every method is a no-op and
  nothing is created. If a previous run was killed mid-line, the partial
  last line of metrics.jsonl is dropped on opening so appends stay one valid
  JSON object per line.

  A local workdir gets each line appended and flushed as it is written. An
  object store (gs://...) cannot append, so with a URL workdir the writer
  keeps the whole metrics.jsonl in memory (read back on opening, so a
  resumed run continues it) and uploads it whole, replacing the object, at
  most every `flush_every_secs` seconds and on `flush()` and `close()`; the
  TensorBoard event files are written to a local temporary folder and copied
  to `workdir/tensorboard/<split>/` at the same moments. A reader always sees
  a whole file; a process killed between uploads loses at most the last
  `flush_every_secs` seconds of lines (call `flush()` before saving a
  checkpoint so that no logged step is lost).
  """

  def __init__(
    self,
    workdir: str,
    *,
    tensorboard: bool = True,
    enabled: bool = True,
    flush_every_secs: float = URL_FLUSH_EVERY_SECS,
  ):
    self.workdir = os.fspath(workdir)
    self.enabled = enabled
    self.tensorboard = tensorboard
    self.path = os.path.join(self.workdir, METRICS_FILENAME)
    self.remote = paths.is_url(self.workdir)
    self.flush_every_secs = flush_every_secs
    self._file = None
    self._lines: list[str] | None = None  # a URL workdir's whole metrics.jsonl
    self._dirty = False
    self._last_upload = time.monotonic()
    self._tb_local: str | None = None  # a URL workdir's local TensorBoard folder
    self._tb_uploaded: dict[str, int] = {}  # relative event file -> uploaded size
    self._tb_writers: dict[str, Any] = {}
    self._closed = False
    if not enabled:
      return
    if self.remote:
      target = paths.as_path(self.path, "workdir")
      text = target.read_text() if target.exists() else ""
      self._lines = [line + "\n" for line in text.split("\n")[:-1]]  # drops a partial line
      return
    os.makedirs(self.workdir, exist_ok=True)
    _drop_partial_last_line(self.path)
    self._file = open(self.path, "a", encoding="utf-8")

  def _tb_writer(self, split: str):
    """Returns (creating on first use) the tensorboardX writer for `split`."""
    if split not in self._tb_writers:
      import tensorboardX  # pylint: disable=g-import-not-at-top

      if self.remote:
        if self._tb_local is None:
          self._tb_local = tempfile.mkdtemp(prefix="minr_jax_tensorboard_")
        logdir = os.path.join(self._tb_local, split)
      else:
        logdir = os.path.join(self.workdir, TENSORBOARD_DIRNAME, split)
      self._tb_writers[split] = tensorboardX.SummaryWriter(logdir=logdir)
    return self._tb_writers[split]

  def write(self, step: int, split: str, scalars: Mapping[str, Any], **extra: Any) -> None:
    """Writes one jsonl line {step, split, **extra, **scalars} and the TensorBoard scalars."""
    if not self.enabled:
      return
    if self._closed:
      raise RuntimeError("MetricWriter.write() after close()")
    values = {name: float(value) for name, value in scalars.items()}
    reserved = {"step", "split"}
    clashes = (reserved & (set(values) | set(extra))) | (set(values) & set(extra))
    if clashes:
      raise ValueError(f"metric names clash with reserved/extra keys: {sorted(clashes)}")
    record = {"step": int(step), "split": split, **extra, **values}
    line = json.dumps(record) + "\n"
    if self.remote:
      self._lines.append(line)
      self._dirty = True
    else:
      self._file.write(line)
      self._file.flush()
    if self.tensorboard and values:
      writer = self._tb_writer(split)
      dataset = extra.get("dataset")
      for name, value in values.items():
        tag = f"{dataset}/{name}" if dataset else name
        writer.add_scalar(tag, value, global_step=int(step))
      writer.flush()
    self._maybe_upload()

  def write_images(self, step: int, tag: str, png_path: str) -> None:
    """Shows a saved PNG grid in TensorBoard (tag e.g. 'eval/demo'); no-op without it."""
    if not (self.enabled and self.tensorboard):
      return
    with paths.as_path(png_path).open("rb") as f, Image.open(f) as img:
      pixels = np.asarray(img.convert("RGB"))
    writer = self._tb_writer("images")
    writer.add_image(tag, pixels, global_step=int(step), dataformats="HWC")
    writer.flush()
    self._maybe_upload()

  def _maybe_upload(self) -> None:
    if self.remote and time.monotonic() - self._last_upload >= self.flush_every_secs:
      self.flush()

  def flush(self) -> None:
    """Makes everything written so far visible in the workdir (uploads, with a URL)."""
    if not self.enabled or self._closed:
      return
    if not self.remote:
      self._file.flush()
      for writer in self._tb_writers.values():
        writer.flush()
      return
    if self._dirty:
      paths.write_text(self.path, "".join(self._lines))
      self._dirty = False
    if self._tb_local is not None:
      for writer in self._tb_writers.values():
        writer.flush()
      self._upload_tensorboard()
    self._last_upload = time.monotonic()

  def _upload_tensorboard(self) -> None:
    """Copies the local event files that grew since their last upload."""
    remote_dir = os.path.join(self.workdir, TENSORBOARD_DIRNAME)
    for rel in paths.files_under(self._tb_local):
      size = os.path.getsize(os.path.join(self._tb_local, rel))
      if self._tb_uploaded.get(rel) != size:
        paths.copy_file(os.path.join(self._tb_local, rel), f"{remote_dir}/{rel}")
        self._tb_uploaded[rel] = size

  def close(self) -> None:
    """Flushes and closes the jsonl file and TensorBoard writers (idempotent)."""
    if self._closed:
      return
    for writer in self._tb_writers.values():
      writer.close()
    try:
      if self.enabled and self.remote:
        self.flush()
    finally:
      self._closed = True
      if self._file is not None:
        self._file.close()
        self._file = None
      self._tb_writers.clear()
      if self._tb_local is not None:
        shutil.rmtree(self._tb_local, ignore_errors=True)
        self._tb_local = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_metrics(path: str) -> list[dict[str, Any]]:
  """Reads a metrics.jsonl (a local path or a URL) into a list of dicts.

  A truncated last line is skipped; a corrupt line anywhere else raises
  ValueError (it is not a killed write).
  """
  lines = paths.as_path(path).read_text(encoding="utf-8").split("\n")
  # Index of the last non-blank line: the only one allowed to be truncated.
  nonblank = [i for i, line in enumerate(lines) if line.strip()]
  last = nonblank[-1] if nonblank else -1
  records = []
  for i in nonblank:
    try:
      records.append(json.loads(lines[i]))
    except json.JSONDecodeError as e:
      if i == last:
        break
      raise ValueError(f"{path}:{i + 1}: corrupt metrics line: {e}") from e
  return records


# Image grid layout (pixels).
GRID_GAP = 2
GRID_TITLE_HEIGHT = 16
GRID_MIN_CELL_HEIGHT = 96


def _to_uint8_rgb(images: Any) -> np.ndarray:
  """[N, H, W, 3|1] or [N, H, W] floats (clipped to [0, 1]) -> uint8 [N, H, W, 3]."""
  x = np.asarray(images, dtype=np.float32)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"grid column must be [N, H, W, 3], got shape {x.shape}")
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  x = np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0)
  return np.round(x * 255.0).astype(np.uint8)


def image_grid_size(
  num_rows: int, num_columns: int, height: int, width: int, with_titles: bool
) -> tuple[int, int]:
  """Returns the (width, height) in pixels of the PNG `save_image_grid` writes."""
  scale = max(1, math.ceil(GRID_MIN_CELL_HEIGHT / height))
  grid_w = num_columns * width * scale + (num_columns - 1) * GRID_GAP
  grid_h = num_rows * height * scale + (num_rows - 1) * GRID_GAP
  if with_titles:
    grid_h += GRID_TITLE_HEIGHT
  return grid_w, grid_h


def save_image_grid(
  path: str,
  columns: Sequence[np.ndarray],
  column_titles: Sequence[str] | None = None,
  max_rows: int = 8,
) -> None:
  """Writes columns of [N, H, W, 3] images in [0, 1] as one PNG (rows = images), atomically."""
  if not columns:
    raise ValueError("save_image_grid needs at least one column")
  cols = [_to_uint8_rgb(c) for c in columns]
  n, h, w, _ = cols[0].shape
  for c in cols[1:]:
    if c.shape != cols[0].shape:
      raise ValueError(f"all grid columns must share [N, H, W, 3]; got {[c.shape for c in cols]}")
  if column_titles is not None and len(column_titles) != len(cols):
    raise ValueError(f"{len(column_titles)} column titles for {len(cols)} columns")
  rows = min(n, max_rows)
  if rows < 1 or h < 1 or w < 1:
    raise ValueError(f"nothing to draw: columns have shape {cols[0].shape}")
  scale = max(1, math.ceil(GRID_MIN_CELL_HEIGHT / h))
  cell_h, cell_w = h * scale, w * scale
  grid_w, grid_h = image_grid_size(rows, len(cols), h, w, column_titles is not None)
  top = GRID_TITLE_HEIGHT if column_titles is not None else 0

  canvas = np.full((grid_h, grid_w, 3), 255, dtype=np.uint8)
  for j, col in enumerate(cols):
    x0 = j * (cell_w + GRID_GAP)
    for i in range(rows):
      y0 = top + i * (cell_h + GRID_GAP)
      cell = col[i].repeat(scale, axis=0).repeat(scale, axis=1)
      canvas[y0 : y0 + cell_h, x0 : x0 + cell_w] = cell

  img = Image.fromarray(canvas)
  if column_titles is not None:
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for j, title in enumerate(column_titles):
      draw.text((j * (cell_w + GRID_GAP) + 2, 2), str(title), fill=(0, 0, 0), font=font)

  buf = io.BytesIO()
  img.save(buf, format="PNG")
  paths.write_bytes(path, buf.getvalue())  # whole: a temp file renamed, or one upload


def format_duration(seconds: float) -> str:
  """Formats seconds as e.g. '42s', '1m02s' or '2h03m04s' ('?' if not finite)."""
  if seconds is None or not math.isfinite(seconds):
    return "?"
  s = max(0, int(round(seconds)))
  h, rem = divmod(s, 3600)
  m, s = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m{s:02d}s"
  if m:
    return f"{m}m{s:02d}s"
  return f"{s}s"


def format_progress(
  step: int,
  num_steps: int,
  loss: float | None,
  psnr: float | None,
  images_per_sec: float | None,
  elapsed_sec: float,
  eta_sec: float | None = None,
) -> str:
  """One progress line; None fields are omitted.

  The ETA is `eta_sec` when given (the training loop passes one from the
  recent step rate, so compile time and earlier runs of a resumed job don't
  skew it), else elapsed_sec / step extrapolated linearly.
  """
  pct = int(100 * step / num_steps) if num_steps > 0 else 100
  parts = [f"step {step}/{num_steps} ({pct}%)"]
  if loss is not None:
    parts.append(f"loss {float(loss):.4g}")
  if psnr is not None:
    parts.append(f"psnr {float(psnr):.2f} dB")
  if images_per_sec is not None:
    parts.append(f"{float(images_per_sec):.1f} img/s")
  parts.append(f"elapsed {format_duration(elapsed_sec)}")
  eta = eta_sec
  if eta is None and step > 0:
    eta = elapsed_sec / step * max(num_steps - step, 0)
  parts.append(f"ETA {format_duration(eta)}")
  return "  ".join(parts)
