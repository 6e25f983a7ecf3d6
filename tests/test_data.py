"""Tests of minr_jax.data: tiny generated folders, the demo, no network."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import signal
import subprocess
import sys
import time

import grain
import ml_collections
import numpy as np
import psutil
import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from minr_jax import data
from minr_jax.config import ConfigError
from minr_jax.data import cartoon_faces, datasets, demo, image_folder

RES = 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

tfds.disable_progress_bar()


def make_config(data_dir, **dataset) -> ml_collections.ConfigDict:
  """A config with every field the data layer reads (small sizes)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.resolution = RES
  config.batch_size = 4
  config.eval_batch_size = 3
  config.dataset = ml_collections.ConfigDict(
    {
      "name": "image_folder",
      "path": None,
      "data_dir": str(data_dir),
      "random_crop": False,
      "train_resize": 0,
      "flip": False,
      "crop_size": 32,
      "eval_crops_per_image": 4,
      "eval_fraction": 0.4,  # Holds out 3 of the flat folder's 8 images.
      "eval_max_images": 0,
      "num_workers": 0,
      "prefetch_buffer": 2,
    }
  )
  config.dataset.update(dataset)
  return config


def write_image(path, size=(20, 24), mode="RGB", seed=0):
  """Writes a random image (format from the extension); size is (w, h)."""
  rng = np.random.default_rng(seed)
  width, height = size
  channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode if mode != "P" else "RGB"]
  array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
  image = Image.fromarray(array.squeeze(-1) if channels == 1 else array)
  if mode == "P":
    image = image.convert("P")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path)


# (relative path, size, mode): JPEG and PNG, greyscale, RGBA, palette, sizes
# below and above RES, one upper-case extension.
_MIXED = [
  ("a.jpg", (20, 24), "RGB"),
  ("b.png", (10, 12), "L"),
  ("c.png", (24, 18), "RGBA"),
  ("d.JPEG", (40, 30), "RGB"),
  ("e.png", (16, 16), "P"),
  ("f.jpg", (12, 30), "L"),
  ("g.png", (33, 17), "RGB"),
  ("h.jpeg", (18, 18), "RGB"),
]


def make_folder(root, layout: str) -> str:
  """Creates a folder: 'flat', 'classes' or 'splits'; returns its path."""
  root = str(root)
  for i, (name, size, mode) in enumerate(_MIXED):
    if layout == "flat":
      rel = name
    elif layout == "classes":
      rel = os.path.join("cat" if i % 2 else "dog", name)
    else:
      split = "val" if i % 4 == 3 else "train"
      rel = os.path.join(split, "cat" if i % 2 else "dog", name)
    write_image(os.path.join(root, rel), size, mode, seed=i)
  with open(os.path.join(root, "notes.txt"), "w") as f:
    f.write("not an image")
  return root


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  """One prepared demo for the module (preparing takes about a second)."""
  return tmp_path_factory.mktemp("demo_data")


def check_image_batch(images, batch):
  assert images.shape == (batch, RES, RES, 3)
  assert images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def image_keys(batches):
  """Hashable fingerprints of every image in the batches."""
  return [
    hashlib.sha1(np.round(im * 255).astype(np.uint8).tobytes()).digest()
    for b in batches
    for im in b["image"]
  ]


# ---------------------------------------------------------------- image_folder


@pytest.mark.parametrize("layout", ["flat", "classes", "splits"])
def test_image_folder_batches(tmp_path, layout):
  path = make_folder(tmp_path / "images", layout)
  config = make_config(tmp_path / "tfds", path=path, flip=True)
  data.check_dataset(config)
  it = data.make_train_iterator(config)
  for batch in take(it, 3):
    assert set(batch) == {"image"}
    check_image_batch(batch["image"], 4)
  n = data.num_eval_images(config)
  assert n == {"flat": 3, "classes": 2, "splits": 2}[layout]
  batches = list(data.make_eval_batches(config))
  assert len(batches) == -(-n // 3)
  for batch in batches:
    check_image_batch(batch["image"], 3)
    assert batch["index"].dtype == np.int32 and batch["index"].shape == (3,)
    assert batch["valid"].dtype == bool and batch["valid"].shape == (3,)
  valid = np.concatenate([b["valid"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  assert valid.sum() == n
  np.testing.assert_array_equal(index[valid], np.arange(n))
  train = datasets.load(data.options_lib.from_config(config)).train
  assert len(train) + n == len(_MIXED)


@pytest.mark.parametrize("layout", ["flat", "classes", "splits"])
def test_labels_and_splits(tmp_path, layout):
  path = make_folder(tmp_path / "images", layout)
  listing = image_folder.list_folder(path, eval_fraction=0.4)
  assert len(listing.files) == len(_MIXED)  # notes.txt is skipped.
  labels = {os.path.basename(f.relpath): f.label for f in listing.files}
  if layout == "flat":
    assert listing.class_names == ()
    assert set(labels.values()) == {image_folder.UNLABELLED}
  else:
    assert listing.class_names == ("cat", "dog")
    assert labels["a.jpg"] == 1 and labels["b.png"] == 0
  if layout == "splits":
    evals = sorted(
      os.path.basename(f.relpath) for f in listing.files if f.split == image_folder.EVAL
    )
    assert evals == ["d.JPEG", "h.jpeg"]


def test_test_dir_is_eval_split_without_val(tmp_path):
  root = tmp_path / "images"
  write_image(str(root / "train" / "x.png"), seed=1)
  write_image(str(root / "test" / "y.png"), seed=2)
  listing = image_folder.list_folder(str(root), eval_fraction=0.5)
  assert {(f.relpath, f.split) for f in listing.files} == {
    ("train/x.png", "train"),
    ("test/y.png", "validation"),
  }


def test_hash_split_is_stable_when_files_are_added(tmp_path):
  root = tmp_path / "images"
  for i in range(30):
    write_image(str(root / f"{i}.png"), (4, 4), seed=i)
  before = {f.relpath: f.split for f in image_folder.list_folder(str(root), 0.3).files}
  assert 0 < sum(s == image_folder.EVAL for s in before.values()) < 30
  for i in range(30, 60):
    write_image(str(root / f"{i}.png"), (4, 4), seed=i)
  after = {f.relpath: f.split for f in image_folder.list_folder(str(root), 0.3).files}
  assert len(after) == 60
  assert all(after[k] == v for k, v in before.items())


def test_images_become_rgb(tmp_path):
  grey = tmp_path / "grey.png"
  Image.fromarray(np.full((5, 6), 77, np.uint8)).save(grey)
  rgba = np.zeros((5, 6, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[:, :3, 3] = 255  # Left half opaque red, right half transparent.
  Image.fromarray(rgba).save(tmp_path / "rgba.png")
  decoded = {}
  for name in ("grey.png", "rgba.png"):
    encoded = image_folder.encoded_rgb(str(tmp_path / name))
    with Image.open(io.BytesIO(encoded)) as image:
      decoded[name] = np.asarray(image)
  assert decoded["grey.png"].shape == (5, 6, 3)
  assert (decoded["grey.png"] == 77).all()
  assert decoded["rgba.png"].shape == (5, 6, 3)
  np.testing.assert_array_equal(decoded["rgba.png"][0, 0], [200, 0, 0])
  np.testing.assert_array_equal(decoded["rgba.png"][0, 5], [255, 255, 255])


def test_random_crop_with_train_resize(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  config = make_config(tmp_path / "tfds", path=path, random_crop=True, train_resize=24, flip=True)
  check_image_batch(next(data.make_train_iterator(config))["image"], 4)


def test_eval_is_identical_across_calls_with_padding(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  config = make_config(tmp_path / "tfds", path=path, eval_fraction=0.5)
  n = data.num_eval_images(config)
  assert n % 3  # So the last batch is padded.
  first = list(data.make_eval_batches(config))
  second = list(data.make_eval_batches(config))
  assert len(first) == len(second)
  for a, b in zip(first, second, strict=True):
    for key in ("image", "index", "valid"):
      np.testing.assert_array_equal(a[key], b[key])
  last = first[-1]
  assert not last["valid"].all()
  assert (last["index"][~last["valid"]] == -1).all()
  assert (last["image"][~last["valid"]] == 0).all()


def test_eval_max_images(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  config = make_config(tmp_path / "tfds", path=path, eval_fraction=0.5, eval_max_images=2)
  assert data.num_eval_images(config) == 2
  batches = list(data.make_eval_batches(config))
  assert len(batches) == 1
  np.testing.assert_array_equal(batches[0]["valid"], [True, True, False])


def test_train_state_round_trip(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  config = make_config(tmp_path / "tfds", path=path, random_crop=True, train_resize=20, flip=True)
  it = data.make_train_iterator(config)
  take(it, 3)  # Crosses epoch boundaries (5 training images, batch 4).
  state = it.get_state()
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it))
  expected = take(it, 3)

  resumed = data.make_train_iterator(config)
  resumed.set_state(state)
  restored = handler.restore(
    epath.Path(tmp_path), args=grain.checkpoint.CheckpointRestore(data.make_train_iterator(config))
  )
  for other in (resumed, restored):
    for want, got in zip(expected, take(other, 3), strict=True):
      np.testing.assert_array_equal(want["image"], got["image"])
  # A fresh iterator starts from the same first batch every run.
  fresh = [next(data.make_train_iterator(config))["image"] for _ in range(2)]
  np.testing.assert_array_equal(fresh[0], fresh[1])


def test_worker_processes_give_the_same_batches(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  config = make_config(tmp_path / "tfds", path=path, random_crop=True, train_resize=20, flip=True)
  expected = take(data.make_train_iterator(config), 4)  # Threads only.
  config.dataset.num_workers = 1
  it = data.make_train_iterator(config)
  resumed = data.make_train_iterator(config)
  try:
    got = take(it, 2)
    resumed.set_state(it.get_state())
    got += take(it, 2)
    for want, batch in zip(expected, got, strict=True):
      np.testing.assert_array_equal(want["image"], batch["image"])
    for want, batch in zip(expected[2:], take(resumed, 2), strict=True):
      np.testing.assert_array_equal(want["image"], batch["image"])
  finally:
    it.close()
    resumed.close()


def test_process_sharding_is_disjoint(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  config = make_config(tmp_path / "tfds", path=path, eval_fraction=0.0)
  config.eval_batch_size = 4
  train, evals = [], []
  for p in range(2):
    it = data.make_train_iterator(config, process_index=p, process_count=2)
    batches = take(it, 2)  # One epoch of this process's 4 images.
    assert batches[0]["image"].shape[0] == 2
    train.append(set(image_keys(batches)))
  assert len(train[0]) == len(train[1]) == 4
  assert not train[0] & train[1]
  # Eval: the path-hash split of other files, so use a real eval split.
  config.dataset.eval_fraction = 0.5
  n = data.num_eval_images(config)
  for p in range(2):
    batches = list(data.make_eval_batches(config, process_index=p, process_count=2))
    assert all(b["image"].shape[0] == 2 for b in batches)
    evals.append(np.concatenate([b["index"][b["valid"]] for b in batches]))
  assert not set(evals[0]) & set(evals[1])
  assert sorted(np.concatenate(evals)) == list(range(n))


def test_reprepare_only_when_folder_changes(tmp_path, monkeypatch):
  path = make_folder(tmp_path / "images", "flat")
  data_dir = str(tmp_path / "tfds")
  calls = []
  original = image_folder.encoded_rgb

  def counting(p):
    calls.append(p)
    return original(p)

  monkeypatch.setattr(image_folder, "encoded_rgb", counting)
  first = image_folder.prepare(path, data_dir, 0.4)
  assert len(calls) == len(_MIXED)
  assert first.data_dir.startswith(os.path.join(data_dir, "image_folder", "images-"))
  again = image_folder.prepare(path, data_dir, 0.4)
  assert len(calls) == len(_MIXED)  # Unchanged folder: reused.
  assert again.data_dir == first.data_dir
  write_image(os.path.join(path, "new.png"), seed=99)
  changed = image_folder.prepare(path, data_dir, 0.4)
  assert len(calls) == 2 * len(_MIXED) + 1  # Changed folder: prepared anew.
  assert changed.data_dir != first.data_dir


# ------------------------------------------------------------------------ demo


def test_demo_batches(demo_dir):
  config = make_config(demo_dir, name="demo", flip=True)
  data.check_dataset(config)
  it = data.make_train_iterator(config)
  for batch in take(it, 2):
    check_image_batch(batch["image"], 4)
  n = data.num_eval_images(config)
  assert n == len(demo.EVAL_PHOTOS) * 4
  first = list(data.make_eval_batches(config))
  second = list(data.make_eval_batches(config))
  assert len(first) == -(-n // 3)
  for a, b in zip(first, second, strict=True):
    check_image_batch(a["image"], 3)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["index"], b["index"])
  index = np.concatenate([b["index"][b["valid"]] for b in first])
  np.testing.assert_array_equal(index, np.arange(n))


def test_demo_train_and_eval_photos_are_disjoint(demo_dir):
  config = make_config(demo_dir, name="demo")
  assert not set(demo.TRAIN_PHOTOS) & set(demo.EVAL_PHOTOS)
  options = data.options_lib.from_config(config)
  dataset = demo.load(options)
  train_ids = {dataset.train[i]["id"] for i in range(len(dataset.train))}
  eval_ids = {dataset.eval[i]["id"].split("/")[0] for i in range(len(dataset.eval))}
  assert train_ids == set(demo.TRAIN_PHOTOS)
  assert eval_ids == set(demo.EVAL_PHOTOS)
  # The grid crops are distinct windows of each photo.
  crops = [dataset.eval[i]["image"] for i in range(4)]
  assert all(c.shape == (32, 32, 3) for c in crops)
  assert len({c.tobytes() for c in crops}) == 4


# ---------------------------------------------------------------------- errors


def test_unknown_name(tmp_path):
  config = make_config(tmp_path, name="nope")
  with pytest.raises(ConfigError, match="'nope'.*image_folder.*demo"):
    data.check_dataset(config)


def test_path_unset(tmp_path):
  with pytest.raises(ConfigError, match="config.dataset.path"):
    data.check_dataset(make_config(tmp_path))


def test_missing_folder(tmp_path):
  missing = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match=missing):
    data.check_dataset(make_config(tmp_path, path=missing))


def test_path_is_a_file(tmp_path):
  path = tmp_path / "file.png"
  write_image(str(path))
  with pytest.raises(ConfigError, match="not a directory"):
    data.check_dataset(make_config(tmp_path, path=str(path)))


def test_folder_without_images(tmp_path):
  empty = tmp_path / "empty"
  (empty / "sub").mkdir(parents=True)
  (empty / "readme.txt").write_text("hi")
  (empty / ".hidden.png").write_text("hidden files are ignored")
  with pytest.raises(ConfigError, match="no images"):
    data.check_dataset(make_config(tmp_path, path=str(empty)))


def test_corrupt_image(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  bad = os.path.join(path, "zz_bad.jpg")
  with open(bad, "wb") as f:
    f.write(b"this is not a jpeg")
  config = make_config(tmp_path / "tfds", path=path)
  data.check_dataset(config)  # Cheap checks do not decode.
  with pytest.raises(ConfigError) as info:
    data.make_train_iterator(config)
  message = str(info.value)
  assert message.startswith(f"cannot read image {bad}: ")
  assert "\n" not in message


def test_bad_batch_size(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  config = make_config(tmp_path / "tfds", path=path)
  with pytest.raises(ConfigError, match="batch_size"):
    data.make_train_iterator(config, process_count=3)


# --------------------------------------------------- bad files in a folder


def _dangling(folder: str) -> tuple[str, str]:
  path = os.path.join(folder, "0_link.jpg")  # Sorted before make_folder's.
  os.symlink(os.path.join(folder, "gone.jpg"), path)
  return path, f"broken symbolic link to {os.path.join(folder, 'gone.jpg')}"


def _loop(folder: str) -> tuple[str, str]:
  first, second = (os.path.join(folder, n) for n in ("0_loop.jpg", "1_loop.jpg"))
  os.symlink(second, first)
  os.symlink(first, second)
  return first, "Too many levels of symbolic links"


def _not_utf8(folder: str) -> tuple[str, str]:
  name = os.fsdecode(b"0_caf\xe9.png")  # Latin-1 bytes: not UTF-8.
  write_image(os.path.join(folder, name))
  shown = os.path.join(folder, "0_caf\\xe9.png")
  return shown, "the file name is not valid UTF-8 (rename the file)"


@pytest.mark.parametrize(
  "make_bad", [_dangling, _loop, _not_utf8], ids=["dangling_symlink", "symlink_loop", "not_utf8"]
)
@pytest.mark.parametrize("first", [True, False], ids=["check", "listing"])
def test_bad_file_is_named_in_one_line(tmp_path, make_bad, first):
  """A bad entry sorted first fails the cheap check, any other the listing."""
  path = make_folder(tmp_path / "images", "flat")
  folder = path if first else os.path.join(path, "zz")
  os.makedirs(folder, exist_ok=True)
  shown, reason = make_bad(folder)
  config = make_config(tmp_path / "tfds", path=path)
  with pytest.raises(ConfigError) as info:
    data.check_dataset(config)
    assert not first, "the cheap check missed a bad first file"
    data.make_train_iterator(config)
  assert str(info.value) == f"cannot read image {shown}: {reason}"


def _deny_listing(monkeypatch, folder: str) -> None:
  """os.scandir of `folder` raises PermissionError, as under chmod 000."""
  scandir = os.scandir

  def denying(path="."):
    if os.fspath(path) == folder:
      raise PermissionError(13, "Permission denied", folder)
    return scandir(path)

  monkeypatch.setattr(os, "scandir", denying)


def test_unreadable_sub_folder_is_named_like_an_unreadable_file(tmp_path, monkeypatch):
  path = make_folder(tmp_path / "images", "classes")
  config = make_config(tmp_path / "tfds", path=path)
  bad_file = os.path.join(path, "dog", "a.jpg")
  real_open = open

  def denying_open(file, *args, **kwargs):
    if file == bad_file:
      raise PermissionError(13, "Permission denied", bad_file)
    return real_open(file, *args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(image_folder, "open", denying_open, raising=False)
    with pytest.raises(ConfigError) as info:
      data.make_train_iterator(config)
  assert str(info.value) == f"cannot read image {bad_file}: Permission denied"

  sub = os.path.join(path, "dog")
  _deny_listing(monkeypatch, sub)
  with pytest.raises(ConfigError) as info:
    data.make_train_iterator(config)  # Before: dog/ was skipped silently.
  assert str(info.value) == f"cannot read folder {sub}: Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder (covered above)")
def test_chmod_000_sub_folder_is_named(tmp_path):
  path = make_folder(tmp_path / "images", "classes")
  sub = os.path.join(path, "dog")
  os.chmod(sub, 0)
  try:
    with pytest.raises(ConfigError) as info:
      data.make_train_iterator(make_config(tmp_path / "tfds", path=path))
  finally:
    os.chmod(sub, 0o755)
  assert str(info.value) == f"cannot read folder {sub}: Permission denied"


@pytest.mark.slow
def test_cli_names_a_bad_file_in_one_line(tmp_path):
  """The command prints `error: ...` alone (no traceback) and exits 1."""
  path = make_folder(tmp_path / "images", "flat")
  shown, reason = _not_utf8(path)  # Sorted first: found by the check.
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "minr_jax.main",
      "--config=configs/transinr.py:tiny",
      f"--workdir={tmp_path / 'run'}",
      "--config.dataset.name=image_folder",
      f"--config.dataset.path={path}",
      f"--config.dataset.data_dir={tmp_path / 'tfds'}",
      "--config.batch_size=8",
      "--config.eval_batch_size=8",
    ],  # 8 devices.
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (f"error: cannot read image {shown}: {reason}")
  assert not os.path.exists(tmp_path / "run")  # Stopped before the workdir.


# ------------------------------------------- which field named the dataset


def test_eval_dataset_errors_name_the_eval_datasets_field(tmp_path):
  path = make_folder(tmp_path / "images", "flat")
  config = make_config(tmp_path / "tfds", path=path)
  with pytest.raises(ConfigError) as info:
    data.check_dataset(config, "nosuch")
  assert str(info.value).startswith(
    "config.eval_datasets: dataset 'nosuch' is unknown; valid names: image_folder, demo, "
  )
  missing = str(tmp_path / "missing")
  with pytest.raises(ConfigError) as info:
    data.check_dataset(config, "image_folder", missing)
  assert str(info.value) == (
    f"the path of config.eval_datasets entry 'image_folder:{missing}': no such directory: {missing}"
  )
  with pytest.raises(ConfigError, match="^--datasets: dataset 'x' is unknown"):
    data.check_dataset(config, "x", origin="--datasets")
  with pytest.raises(ConfigError, match=r"^config.eval_datasets: dataset 'x'"):
    list(data.make_eval_batches(config, "x"))
  # The config's own dataset, given or not, is blamed on config.dataset.
  data.check_dataset(config, "image_folder", path)
  config.dataset.path = missing
  with pytest.raises(ConfigError, match="^config.dataset.path: no such"):
    data.check_dataset(config, "image_folder", missing)
  config.dataset.name = "nosuch"
  with pytest.raises(ConfigError, match="^config.dataset.name: dataset 'nosuch' is unknown"):
    data.check_dataset(config)


# ------------------------------------------------- defaults live in configs


@pytest.mark.parametrize(
  "config_file, variant",
  [
    ("transinr", ""),
    ("transinr", "tiny"),
    ("transinr", "celeba"),
    ("ginr", ""),
    ("mae", ""),
    ("mae", "imagenette"),
  ],
)
def test_configs_hold_every_data_default(config_file, variant):
  """Each config file sets every data field; options keep its values."""
  config = importlib.import_module(f"configs.{config_file}").get_config(variant)
  options = data.options_lib.from_config(config)
  assert options.num_workers == config.dataset.num_workers
  assert options.prefetch_buffer == config.dataset.prefetch_buffer
  assert options.crop_size == config.dataset.crop_size
  assert options.eval_fraction == config.dataset.eval_fraction
  assert options.origin == ""


def test_a_config_without_a_data_field_is_refused(tmp_path):
  config = make_config(tmp_path)
  del config.dataset["num_workers"]
  with pytest.raises(ConfigError, match=r"^config.dataset.num_workers is missing"):
    data.options_lib.from_config(config)
  # A saved config.json older than dataset.eval_split still reads.
  config = make_config(tmp_path, name="demo")
  assert "eval_split" not in config.dataset
  assert data.options_lib.from_config(config).eval_split == ""


# ------------------------------------------------------------- no orphans


@pytest.mark.slow
def test_grain_workers_end_soon_after_the_trainer_is_killed(tmp_path):
  """SIGKILL the training process only: its worker processes follow."""
  path = make_folder(tmp_path / "images", "splits")
  workdir = tmp_path / "run"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  trainer = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "minr_jax.main",
      "--config=configs/transinr.py:tiny",
      f"--workdir={workdir}",
      "--config.dataset.name=image_folder",
      f"--config.dataset.path={path}",
      f"--config.dataset.data_dir={tmp_path / 'tfds'}",
      "--config.dataset.num_workers=2",
      "--config.num_train_steps=100000",
      "--config.eval_every_steps=100000",
      "--config.checkpoint_every_steps=100000",
    ],
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  metrics_file = workdir / "metrics.jsonl"
  deadline = time.time() + 400
  children = []
  try:
    # Training steps are logged: the workers are up and feeding batches.
    while not (metrics_file.exists() and '"train"' in metrics_file.read_text()):
      assert trainer.poll() is None, trainer.stderr.read()[-2000:]
      assert time.time() < deadline, "no training step in time"
      time.sleep(0.2)
    children = psutil.Process(trainer.pid).children(recursive=True)
    workers = [p for p in children if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2
  finally:
    trainer.kill()  # SIGKILL: no clean-up runs in the trainer.
    trainer.communicate()

  def gone(process: psutil.Process) -> bool:
    try:
      return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
      return True

  killed = time.time()
  while time.time() < killed + 10 and not all(map(gone, children)):
    time.sleep(0.1)
  left = [p.pid for p in children if not gone(p)]
  for pid in left:  # Do not leave them running if the test fails.
    os.kill(pid, signal.SIGKILL)
  assert not left, f"processes still running 10 s after the trainer: {left}"


# --------------------------------------------------------------- cartoon faces


def test_cartoon_faces_batches_are_fresh_and_eval_is_fixed(tmp_path):
  config = make_config(tmp_path, name="cartoon_faces", flip=True)
  data.check_dataset(config)
  batches = take(data.make_train_iterator(config), 2)
  for batch in batches:
    check_image_batch(batch["image"], 4)
  assert len(set(image_keys(batches))) == 8  # every training face is new
  # The same seed gives the same stream.
  again = take(data.make_train_iterator(config), 2)
  np.testing.assert_array_equal(batches[0]["image"], again[0]["image"])
  config.dataset.eval_max_images = 5
  first, second = (list(data.make_eval_batches(config)) for _ in range(2))
  for a, b in zip(first, second, strict=True):
    check_image_batch(a["image"], 3)
    np.testing.assert_array_equal(a["image"], b["image"])
  index = np.concatenate([b["index"][b["valid"]] for b in first])
  np.testing.assert_array_equal(index, np.arange(5))
  # Held-out faces are not in the training stream.
  assert not set(image_keys(first)) & set(image_keys(batches))
  assert not os.listdir(tmp_path)  # nothing prepared or written


def test_cartoon_face_is_a_face_on_a_background():
  face = cartoon_faces.eval_face(3, resolution=32)["image"]
  assert face.shape == (32, 32, 3) and face.dtype == np.uint8
  np.testing.assert_array_equal(face, cartoon_faces.eval_face(3, resolution=32)["image"])
  assert not np.array_equal(face, cartoon_faces.eval_face(4, resolution=32)["image"])
  # The eye whites sit in the upper half of the centre, left and right of it.
  near_white = np.all(face.astype(int) >= 230, axis=-1)
  rows, cols = np.nonzero(near_white)
  assert rows.size and rows.max() < 20 and cols.min() < 16 <= cols.max()


def test_cartoon_faces_refuse_an_eval_split(tmp_path):
  config = make_config(tmp_path, name="cartoon_faces", eval_split="test")
  with pytest.raises(ConfigError, match="config.dataset.eval_split"):
    data.check_dataset(config)
