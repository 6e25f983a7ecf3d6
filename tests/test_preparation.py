"""Preparing image folders: concurrent and killed preparations, a full disk,
files that are not regular, empty eval splits, a workdir inside the folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import tensorflow_datasets as tfds
from helpers import make_image_folder, run_at_once, tiny_config

from minr_jax import data
from minr_jax.config import ConfigError
from minr_jax.data import image_folder, tfds_utils
from minr_jax.evaluation import scoring
from minr_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

tfds.disable_progress_bar()


def _builder(folder: str, data_dir: str) -> image_folder.ImageFolderBuilder:
  listing = image_folder.list_folder(folder, 0.1)
  return image_folder.ImageFolderBuilder(
    listing=listing,
    data_dir=data_dir,
    config=tfds.core.BuilderConfig(name=image_folder.config_name(listing)),
    file_format=tfds_utils.FILE_FORMAT,
  )


# ------------------------------------------------------- concurrent preparations


def test_a_builder_made_before_another_process_prepared_reads_the_data(tmp_path):
  """The second of two first runs made its builder before the data existed, then
  waited for the first: it must read the finished splits, not none."""
  folder = make_image_folder(str(tmp_path / "images"), num_train=3, num_val=2, size=8)
  data_dir = str(tmp_path / "tfds")
  waiting = _builder(folder, data_dir)  # made while nothing is prepared
  tfds_utils.prepare(_builder(folder, data_dir))  # the other process
  tfds_utils.prepare(waiting)  # finds the data prepared meanwhile
  assert len(tfds_utils.split_source(waiting, image_folder.TRAIN)) == 3
  assert len(tfds_utils.split_source(waiting, image_folder.EVAL)) == 2


_RUN_TOGETHER = """
import glob, os, sys, time
from helpers import tiny_config
from minr_jax import data
folder, data_dir, ready = sys.argv[1], sys.argv[2], sys.argv[3]
# Imports done: wait for the other process of the pair, then both prepare at once.
os.makedirs(ready, exist_ok=True)
open(os.path.join(ready, str(os.getpid())), "w").close()
while len(os.listdir(ready)) < 2:
  time.sleep(0.001)
config = tiny_config(data_dir, folder)
data.make_train_iterator(config)
print('eval images', data.check_eval_images(config))
"""


@pytest.mark.slow
def test_two_first_runs_prepare_one_new_folder_at_once(tmp_path):
  """Two processes prepare the same new folder into one data_dir at the same moment
  (without the fix, one failed with 'no training images' in about half the tries).
  Three such pairs, all started together; each pair starts preparing once both of
  its processes have imported everything."""
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(
      [ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")]
    ),
    TMPDIR=str(tmp_path),
  )
  commands = []
  for trial in range(3):
    folder = make_image_folder(str(tmp_path / f"images{trial}"), size=8, seed=trial)
    args = [folder, str(tmp_path / f"tfds{trial}"), str(tmp_path / f"ready{trial}")]
    commands += [[sys.executable, "-c", _RUN_TOGETHER, *args]] * 2
  for i, p in enumerate(run_at_once(commands, timeout=300, cwd=ROOT, env=env)):
    assert p.returncode == 0, (i // 2, p.stderr[-1500:])
    assert p.stdout.strip().splitlines()[-1] == "eval images 4"
  assert not [n for n in os.listdir(tmp_path) if n.startswith("tmp")]  # no tmp*tfds


# ------------------------------------------------------------ killed, leftovers


def test_incomplete_folders_of_killed_preparations_are_removed(tmp_path):
  folder = make_image_folder(str(tmp_path / "images"), num_train=3, num_val=2, size=8)
  data_dir = str(tmp_path / "tfds")
  builder = _builder(folder, data_dir)
  config_dir = os.path.dirname(builder.data_dir)
  killed = os.path.join(config_dir, "incomplete.ABC123_1.0.0")  # this folder, killed
  older = os.path.join(
    data_dir, "image_folder", "images-0123456789ab", "incomplete.XYZ789_1.0.0"
  )  # an older version of the folder
  running = os.path.join(
    data_dir, "image_folder", "other-0123456789ab", "incomplete.QQQ111_1.0.0"
  )  # being prepared right now
  for leftover in (killed, older, running):
    os.makedirs(leftover)
    with open(os.path.join(leftover, "image_folder-train.array_record-00000-of-00001"), "wb") as f:
      f.write(b"\0" * 1000)
  lock = tfds_utils._lock_of(data_dir, os.path.join(os.path.dirname(running), "1.0.0"))
  with tfds_utils._file_lock(lock):  # held as by a live preparation
    tfds_utils.prepare(builder)
  assert not os.path.exists(killed) and not os.path.exists(older)
  assert os.path.isdir(running)
  assert len(tfds_utils.split_source(builder, image_folder.TRAIN)) == 3


_SLOW_PREPARATION = """
import sys, time
from minr_jax.data import image_folder
original = image_folder.encoded_rgb
def slow(path):
  time.sleep(0.5)
  return original(path)
image_folder.encoded_rgb = slow
image_folder.prepare(sys.argv[1], sys.argv[2], 0.1)
"""


@pytest.mark.slow
def test_a_killed_preparation_leaves_nothing_after_the_next_start(tmp_path):
  folder = make_image_folder(str(tmp_path / "images"), size=8)
  data_dir = str(tmp_path / "tfds")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.Popen(
    [sys.executable, "-c", _SLOW_PREPARATION, folder, data_dir],
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )

  def incomplete() -> list[str]:
    top = os.path.join(data_dir, "image_folder")
    return [
      os.path.join(d, n) for d, dirs, _ in os.walk(top) for n in dirs if n.startswith("incomplete.")
    ]

  try:
    deadline = time.time() + 120
    while not incomplete():
      assert proc.poll() is None and time.time() < deadline, "no preparation started"
      time.sleep(0.05)
    time.sleep(1.0)  # a few images written
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert incomplete()  # what a killed preparation leaves
  builder = image_folder.prepare(folder, data_dir, 0.1)
  assert not incomplete()
  assert len(tfds_utils.split_source(builder, image_folder.TRAIN)) == 12


def test_no_temp_directory_outlives_a_preparation(tmp_path, monkeypatch):
  temp = tmp_path / "temp"
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  folder = make_image_folder(str(tmp_path / "images"), num_train=3, num_val=2, size=8)
  config = tiny_config(str(tmp_path / "tfds"), folder)
  data.make_train_iterator(config)
  assert data.check_eval_images(config) == 2
  assert os.listdir(temp) == []


# ------------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path):
  """A 256 kB tmpfs mounted for the test (skipped where mounting is not permitted)."""
  mount = tmp_path / "small"
  mount.mkdir()
  out = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True
  )
  if out.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode})")
  try:
    yield str(mount)
  finally:
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_during_preparation_is_one_line_and_leaves_nothing(tmp_path, small_disk):
  import numpy as np  # noqa: PLC0415
  from PIL import Image  # noqa: PLC0415

  folder = tmp_path / "noise"
  (folder / "train").mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(20):  # incompressible: about 12 kB each, 240 kB in all
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(
      folder / "train" / f"{i:02d}.png"
    )
  data_dir = os.path.join(small_disk, "tfds")
  for _ in range(2):  # a second try is not mistaken for finished data
    with pytest.raises(tfds_utils.NoSpaceError) as info:
      image_folder.prepare(str(folder), data_dir, 0.1)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
      f"config.dataset.data_dir: no space left on the device of "
      f"{data_dir} while preparing image_folder ("
    )
    assert " MB free of 0.3 MB; the source files take 0." in message
    builder = _builder(str(folder), data_dir)
    assert not tfds_utils.is_prepared(builder)
    left = [
      n for _, dirs, files in os.walk(os.path.join(data_dir, "image_folder")) for n in dirs + files
    ]
    assert left == [os.path.basename(os.path.dirname(builder.data_dir))], left


# ------------------------------------------------------- files that are not files


def test_a_fifo_named_like_an_image_is_skipped_and_counted(tmp_path, capsys):
  folder = make_image_folder(str(tmp_path / "images"), num_train=3, num_val=2, size=8)
  fifo = os.path.join(folder, "train", "x.jpg")
  os.mkfifo(fifo)
  os.symlink(fifo, os.path.join(folder, "train", "y.jpg"))  # a link to it: the same
  config = tiny_config(str(tmp_path / "tfds"), folder)
  signal.alarm(60)  # a FIFO opened for reading blocks forever
  try:
    data.check_dataset(config)
    data.make_train_iterator(config)
  finally:
    signal.alarm(0)
  line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("preparing")]
  assert len(line) == 1 and line[0].endswith(
    f"; skipped 2 image name(s) that are not regular files (FIFO, device or socket), e.g. {fifo}"
  ), line
  builder = _builder(folder, str(tmp_path / "tfds"))
  assert len(tfds_utils.split_source(builder, image_folder.TRAIN)) == 3
  only = tmp_path / "only"
  only.mkdir()
  os.mkfifo(only / "a.png")
  with pytest.raises(ConfigError) as info:
    data.check_dataset(tiny_config(str(tmp_path / "tfds"), str(only)))
  assert str(info.value) == (
    f"config.dataset.path: no images (bmp/jpeg/jpg/png/webp) in "
    f"{only} (skipped, not regular files: {only}/a.png)"
  )


def test_an_image_turned_into_a_fifo_after_listing_is_refused_not_waited_for(tmp_path):
  path = str(tmp_path / "a.png")
  os.mkfifo(path)
  signal.alarm(60)
  try:
    with pytest.raises(ConfigError, match=f"^cannot read image {path}: not a regular file$"):
      image_folder.encoded_rgb(path)
  finally:
    signal.alarm(0)


# ------------------------------------------------------------ empty eval splits


def test_an_empty_eval_split_is_one_line_naming_the_field(tmp_path):
  data_dir = str(tmp_path / "tfds")
  folder = make_image_folder(str(tmp_path / "splits"), num_train=3, num_val=0, size=8)
  with pytest.raises(ConfigError) as info:
    data.check_eval_images(tiny_config(data_dir, folder))
  assert str(info.value) == (
    f"config.dataset.path: no evaluation images in {folder} ({folder}/val holds no images)"
  )
  single = tmp_path / "single"
  single.mkdir()
  os.rename(os.path.join(folder, "train", "img_000.png"), single / "a.png")
  config = tiny_config(data_dir, "/elsewhere", dataset__eval_fraction=0.1)
  with pytest.raises(ConfigError) as info:
    data.check_eval_images(config, "image_folder", str(single))
  assert str(info.value) == (
    f"the path of config.eval_datasets entry 'image_folder:{single}': no evaluation "
    f"images in {single} (none fell in the held-out share, "
    "config.dataset.eval_fraction=0.1, by the hash of its path; add images, raise "
    "config.dataset.eval_fraction, or make train/ and val/ sub-folders)"
  )


@pytest.mark.slow
def test_training_refuses_an_empty_eval_split_before_compiling(tmp_path, capsys):
  data_dir = str(tmp_path / "tfds")
  good = make_image_folder(str(tmp_path / "good"), num_train=8, num_val=2, size=8)
  empty = make_image_folder(str(tmp_path / "empty"), num_train=2, num_val=0, size=8)
  config = tiny_config(data_dir, good, eval_datasets=f"image_folder:{empty}")
  workdir = tmp_path / "run"
  with pytest.raises(
    ConfigError,
    match=f"^the path of config.eval_datasets entry "
    f"'image_folder:{empty}': no evaluation images in {empty} ",
  ):
    loop.train_and_evaluate(config, str(workdir))
  assert "compiling" not in capsys.readouterr().out
  assert not (workdir / "checkpoints").exists()


# ------------------------------------------------------- workdir inside the folder


def test_a_workdir_inside_the_image_folder_is_refused(tmp_path):
  folder = make_image_folder(str(tmp_path / "images"), num_train=3, num_val=2, size=8)
  config = tiny_config(str(tmp_path / "tfds"), folder)
  datasets = scoring.eval_datasets(config)
  inside = os.path.join(folder, "runs", "a")
  with pytest.raises(ConfigError) as info:
    scoring.check_datasets(config, datasets, workdir=inside)
  assert str(info.value) == (
    f"--workdir={inside} is inside config.dataset.path {folder}: the run's PNG grids "
    "would become training images the next time the folder is prepared; use a workdir "
    "outside the folder (or a hidden one, named .something)"
  )
  with pytest.raises(
    ConfigError,
    match=r"^--workdir=.* is inside the path of "
    r"config.eval_datasets entry 'image_folder:",
  ):
    other = tiny_config(str(tmp_path / "tfds"), None, eval_datasets=f"image_folder:{folder}")
    scoring.check_datasets(other, scoring.eval_datasets(other), workdir=folder)
  for fine in (
    os.path.join(folder, ".runs", "a"),
    str(tmp_path / "images2"),
    str(tmp_path / "run"),
  ):
    scoring.check_datasets(config, datasets, workdir=fine)
