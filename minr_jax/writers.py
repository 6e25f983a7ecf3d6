"""What runs write on the host: metrics.jsonl and TensorBoard (`MetricWriter`), PNG grids
(`save_image_grid`), and the progress line.
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

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from minr_jax import paths

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
    """Writes one jsonl line {step, split, **extra, **scalars} and the TensorBoard scalars
    (text values, e.g. the name of the best baseline, go to the jsonl line only)."""
    if not self.enabled:
      return
    if self._closed:
      raise RuntimeError("MetricWriter.write() after close()")
    texts = {name: value for name, value in scalars.items() if isinstance(value, str)}
    values = {name: float(value) for name, value in scalars.items() if name not in texts}
    reserved = {"step", "split"}
    clashes = (reserved & (set(scalars) | set(extra))) | (set(scalars) & set(extra))
    if clashes:
      raise ValueError(f"metric names clash with reserved/extra keys: {sorted(clashes)}")
    record = {"step": int(step), "split": split, **extra, **texts, **values}
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
