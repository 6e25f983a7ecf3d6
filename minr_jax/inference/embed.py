r"""Embed a dataset with a trained checkpoint: `run`, `read_embeddings`.

The body of `python -m minr_jax.embed`; the .npz / .array_record output is what
`python -m minr_jax.probe` reads (docs/reuse.md).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from minr_jax import paths
from minr_jax.config import ConfigError
from minr_jax.inference import model, restore

SPLITS = ("eval", "train")
FORMATS = (".npz", ".array_record")


# ----------------------------------------------------------------- images ---


def _text(value: Any) -> str:
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.decode() if isinstance(value, bytes) else str(value)


def _image_element(position: int, *, source, transform) -> dict[str, Any]:
  """Raw example `position` -> {'image': float32 [R, R, 3], 'index', 'id', 'label'}.

  id is None when the dataset has no ids; label is None when it has no
  labels (image_folder's -1, 'unlabelled', is kept as -1).
  """
  example = source[position]
  label = example.get("label")
  if label is not None:
    label = np.asarray(label)
    label = int(label) if np.issubdtype(label.dtype, np.integer) else None
  image_id = example.get("id")
  return {
    "image": np.asarray(transform(example)["image"], np.float32),
    "index": position,
    "id": None if image_id is None else _text(image_id),
    "label": label,
  }


def iterate_images(
  config, name: str, path: str | None, split: str, batch_size: int, max_images: int | None = None
) -> tuple[int, Iterator[dict[str, Any]]]:
  """(N, batches) of a dataset split in its fixed order.

  Each batch: {'image': float32 [n, R, R, 3], 'index': int64 [n], 'id': list
  of n str or None, 'label': list of n int or None}, n <= batch_size. Reads
  the raw source through the data layer (`minr_jax.data.datasets.load`) and
  applies the dataset's evaluation transform; decoding runs in threads.
  """
  import grain  # noqa: PLC0415

  from minr_jax import data  # noqa: PLC0415
  from minr_jax.data import datasets  # noqa: PLC0415
  from minr_jax.data import options as options_lib  # noqa: PLC0415

  if split not in SPLITS:
    raise ConfigError(f"--split={split!r} must be one of {', '.join(SPLITS)}")
  data.check_dataset(config, name, path, origin="--dataset")
  options = options_lib.from_config(config, name, path, origin="--dataset")
  dataset = datasets.load(options)
  source = dataset.eval if split == "eval" else dataset.train
  count = len(source)
  if max_images is not None:
    if max_images < 1:
      raise ConfigError(f"--max_images={max_images} must be positive")
    count = min(count, max_images)
  if count == 0:
    raise ConfigError(f"the {split} split of {name} holds no images")
  elements = grain.MapDataset.range(count).map(
    lambda i: _image_element(i, source=source, transform=dataset.eval_transform)
  )
  read = grain.ReadOptions(
    num_threads=max(1, min(8, os.cpu_count() or 1)), prefetch_buffer_size=2 * batch_size
  )

  def batches() -> Iterator[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for element in elements.to_iter_dataset(read):
      rows.append(element)
      if len(rows) == batch_size:
        yield _stack(rows)
        rows = []
    if rows:
      yield _stack(rows)

  return count, batches()


def _stack(rows: list[dict[str, Any]]) -> dict[str, Any]:
  return {
    "image": np.stack([r["image"] for r in rows]),
    "index": np.asarray([r["index"] for r in rows], np.int64),
    "id": [r["id"] for r in rows],
    "label": [r["label"] for r in rows],
  }


# ---------------------------------------------------------------- writers ---


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """np.savez, but byte-for-byte deterministic (fixed zip timestamps), written whole.

  path: a local path (a temp file renamed over it) or a URL (one upload).
  """
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
    for key, value in arrays.items():
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
      z.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
  paths.write_bytes(path, out.getvalue())


def _record(
  embedding: np.ndarray, index: int, image_id: str | None, label: int | None, kind: str
) -> bytes:
  import msgpack  # noqa: PLC0415

  return msgpack.packb(
    {
      "embedding": np.asarray(embedding, "<f4").tobytes(),
      "dim": int(embedding.shape[0]),
      "index": int(index),
      "id": image_id,
      "label": label,
      "kind": kind,
    }
  )


class _ArrayRecordSink:
  """Writes one msgpack record per image to `<path>` (atomically on close).

  ArrayRecordWriter writes local files only: the records go to a temporary
  file beside a local `path`, or in the temp folder for a URL, which is
  uploaded whole on close.
  """

  def __init__(self, path: str):
    from array_record.python.array_record_module import ArrayRecordWriter  # noqa: PLC0415

    self.path = path
    if paths.is_url(path):
      fd, self.tmp = tempfile.mkstemp(prefix="minr_jax_embed_", suffix=".array_record")
      os.close(fd)
    else:
      self.tmp = f"{path}.tmp{os.getpid()}"
    self.writer = ArrayRecordWriter(self.tmp, "group_size:1")

  def write(self, record: bytes) -> None:
    self.writer.write(record)

  def close(self) -> None:
    self.writer.close()
    if paths.is_url(self.path):
      try:
        paths.copy_file(self.tmp, self.path)
      finally:
        os.remove(self.tmp)
    else:
      os.replace(self.tmp, self.path)


# ---------------------------------------------------------------- readers ---


def read_embeddings(path: str) -> dict[str, Any]:
  """Reads an embedding file (.npz or .array_record) written here.

  Returns {'embeddings': float32 [N, D], 'indices': int64 [N], 'ids': str
  [N] or None, 'labels': int64 [N] or None, 'kind': str or None}. Labels
  are None when the file has none (or every one is -1, unlabelled).
  Raises ConfigError for a missing, unreadable or empty file.
  """
  path = os.fspath(path)
  paths.check_reachable(path)
  if not paths.as_path(path).is_file():
    raise ConfigError(f"{path} does not exist")
  if path.endswith(".array_record"):
    out = _read_array_record(path)
  else:
    try:
      source = io.BytesIO(paths.as_path(path).read_bytes()) if paths.is_url(path) else path
      with np.load(source, allow_pickle=False) as f:
        files = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
      raise ConfigError(f"{path} is not an .npz embedding file ({e})") from None
    if "embeddings" not in files:
      raise ConfigError(
        f"{path} holds no 'embeddings' array (keys: {', '.join(sorted(files)) or 'none'})"
      )
    emb = files["embeddings"]
    out = {
      "embeddings": emb,
      "indices": files.get("indices", np.arange(len(emb), dtype=np.int64)),
      "ids": files.get("ids"),
      "labels": files.get("labels"),
      "kind": str(files["kind"]) if "kind" in files else None,
    }
  emb = np.asarray(out["embeddings"], np.float32)
  if emb.ndim != 2 or emb.shape[0] == 0:
    raise ConfigError(
      f"{path}: embeddings must be a non-empty [N, D] array, got shape {list(emb.shape)}"
    )
  out["embeddings"] = emb
  labels = out["labels"]
  if labels is not None:
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (emb.shape[0],):
      raise ConfigError(f"{path}: {labels.shape[0]} labels for {emb.shape[0]} embeddings")
    if not (labels >= 0).any():
      labels = None
  out["labels"] = labels
  return out


def _read_array_record(path: str) -> dict[str, Any]:
  import msgpack  # noqa: PLC0415
  from array_record.python.array_record_module import ArrayRecordReader  # noqa: PLC0415

  local = path
  if paths.is_url(path):  # ArrayRecordReader reads local files only
    fd, local = tempfile.mkstemp(prefix="minr_jax_embed_", suffix=".array_record")
    with os.fdopen(fd, "wb") as f:
      f.write(paths.as_path(path).read_bytes())
  try:
    reader = ArrayRecordReader(local)
    raw = reader.read_all()
    reader.close()
    records = [msgpack.unpackb(r) for r in raw]
  except Exception as e:  # noqa: BLE001 (array_record raises plain RuntimeErrors)
    raise ConfigError(f"{path} is not an .array_record embedding file ({e})") from None
  finally:
    if local != path:
      os.remove(local)
  if not records:
    raise ConfigError(f"{path} holds no records")
  dims = {r["dim"] for r in records}
  if len(dims) != 1:
    raise ConfigError(f"{path}: records of different dims {sorted(dims)}")
  labels = [r.get("label") for r in records]
  ids = [r.get("id") for r in records]
  return {
    "embeddings": np.stack([np.frombuffer(r["embedding"], "<f4") for r in records]),
    "indices": np.asarray([r["index"] for r in records], np.int64),
    "ids": None
    if all(i is None for i in ids)
    else np.asarray(["" if i is None else i for i in ids]),
    "labels": None
    if all(l is None for l in labels)
    else np.asarray([-1 if l is None else l for l in labels], np.int64),
    "kind": records[0].get("kind"),
  }


# ----------------------------------------------------------------- driver ---


def embed_dataset(
  minr,
  dataset: str,
  split: str = "eval",
  kind: str = "data_mean",
  output: str | None = None,
  masked: bool = False,
  max_images: int | None = None,
  progress: bool = True,
) -> dict[str, Any]:
  """Embeds a dataset split with a loaded `model.Model` and writes `output`.

  dataset: 'name' or 'name:path'. Returns the summary {'num_images', 'dim',
  'output', 'has_labels', 'has_ids'}; with output None nothing is written
  and the summary also holds the arrays (as `read_embeddings` returns them).
  """

  if kind not in model.KINDS:
    raise ConfigError(f"--kind={kind!r} is not one of {', '.join(model.KINDS)}")
  fmt = None
  if output is not None:
    fmt = next((f for f in FORMATS if output.endswith(f)), None)
    if fmt is None:
      raise ConfigError(f"--output={output} must end in {' or '.join(FORMATS)}")
    paths.check_reachable(output, "--output")
  name, _, path = dataset.partition(":")
  count, batches = iterate_images(
    minr.config, name, path or None, split, minr.batch_size, max_images
  )
  sink = None
  if fmt == ".array_record":
    paths.makedirs(os.path.dirname(paths.abspath(output)))
    sink = _ArrayRecordSink(output)
  parts, indices, ids, labels, dim = [], [], [], [], 0
  bar = _progress(count, f"embedding {dataset} {split}", progress)
  try:
    for batch in batches:
      emb = minr.embed(
        batch["image"], kind=kind, mask="random" if masked else None, indices=batch["index"]
      )
      dim = emb.shape[1]
      if sink is not None:
        for row, index, image_id, label in zip(emb, batch["index"], batch["id"], batch["label"]):
          sink.write(_record(row, index, image_id, label, kind))
      else:
        parts.append(emb)
      indices.append(batch["index"])
      ids.extend(batch["id"])
      labels.extend(batch["label"])
      bar.update(len(emb))
  finally:
    bar.close()
  if sink is not None:
    sink.close()
  has_ids = any(i is not None for i in ids)
  has_labels = any(l is not None and l >= 0 for l in labels)
  summary = {
    "num_images": count,
    "dim": int(dim),
    "output": output,
    "has_labels": has_labels,
    "has_ids": has_ids,
  }
  if fmt == ".array_record":
    return summary
  arrays: dict[str, Any] = {
    "embeddings": np.concatenate(parts).astype(np.float32),
    "indices": np.concatenate(indices).astype(np.int64),
  }
  if has_ids:
    arrays["ids"] = np.asarray(["" if i is None else i for i in ids])
  if has_labels:
    arrays["labels"] = np.asarray([-1 if l is None else l for l in labels], np.int64)
  arrays.update(
    kind=np.asarray(kind),
    dataset=np.asarray(dataset),
    split=np.asarray(split),
    step=np.asarray(minr.step, np.int64),
    masked=np.asarray(masked),
  )
  if output is None:
    summary.update(arrays)
    return summary
  save_npz(output, arrays)  # creates a local output's folder
  return summary


class _NoBar:
  def update(self, n: int) -> None:
    del n

  def close(self) -> None:
    pass


def _progress(total: int, desc: str, enabled: bool):
  """A tqdm bar on stderr when it is a terminal (no escape sequences in log files)."""
  if not enabled or not sys.stderr.isatty():
    return _NoBar()
  try:
    from tqdm import tqdm  # noqa: PLC0415
  except ImportError:
    return _NoBar()
  return tqdm(total=total, desc=desc, unit="img", file=sys.stderr)


def run(
  workdir: str,
  dataset: str,
  output: str,
  split: str = "eval",
  kind: str = "data_mean",
  masked: bool = False,
  max_images: int | None = None,
  batch_size: int | None = None,
  step: int | None = None,
  devices: int | None = None,
  progress: bool = True,
) -> dict[str, Any]:
  """The command: load the workdir's checkpoint, embed, write; returns the summary."""

  if not dataset:
    raise ConfigError("--dataset is empty: give NAME or NAME:PATH")
  if kind not in model.KINDS:  # before anything is loaded
    raise ConfigError(f"--kind={kind!r} is not one of {', '.join(model.KINDS)}")
  if not output.endswith(FORMATS):
    raise ConfigError(f"--output={output} must end in {' or '.join(FORMATS)}")
  paths.check_reachable(output, "--output")  # a URL's scheme and bucket
  from minr_jax import data  # noqa: PLC0415
  from minr_jax.config import load_saved  # noqa: PLC0415

  name, _, path = dataset.partition(":")
  config = load_saved(restore.resolve_path(workdir, step)[0])
  data.check_dataset(config, name, path or None, origin="--dataset")  # before loading
  minr = model.load(workdir, step, devices=devices, batch_size=batch_size)
  summary = embed_dataset(minr, dataset, split, kind, output, masked, max_images, progress)
  print(
    f"wrote {summary['num_images']} embeddings of dim {summary['dim']} ({kind}, "
    f"step {minr.step}{', masked' if masked else ''}"
    f"{', with labels' if summary['has_labels'] else ''}) to {output}",
    flush=True,
  )
  return summary
