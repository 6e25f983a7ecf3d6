"""Tests of the paper's datasets: celeb_a, imagenette, mit_indoor67.

No network, no real data: the catalogue datasets are served by
`tfds.testing.mock_data` (over fake prepared metadata, see
`write_fake_metadata`) and also prepared for real from tiny fake manual files
(TFDS's registered checksums patched to theirs); MIT-Indoor67 is prepared from
a tiny generated folder / tar laid out like the official archive.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import zipfile

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.download import checksums

from configs import transinr as transinr_config
from minr_jax import data
from minr_jax.config import ConfigError
from minr_jax.data import catalogue, datasets, mit_indoor67
from minr_jax.data import options as options_lib

RES = 16

tfds.disable_progress_bar()


def make_config(data_dir, name, **dataset) -> ml_collections.ConfigDict:
  """A small config with the data defaults of configs/transinr.py (so the
  augmentation fields are unset unless given), read by threads."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.resolution = RES
  config.batch_size = 4
  config.eval_batch_size = 3
  config.dataset = ml_collections.ConfigDict(transinr_config.get_config().dataset.to_dict())
  config.dataset.update(name=name, data_dir=str(data_dir), num_workers=0, prefetch_buffer=2)
  config.dataset.update(dataset)
  return config


def counts(config) -> tuple[int, int]:
  """(training examples, eval images) of the config's dataset."""
  train = datasets.load(options_lib.from_config(config)).train
  return len(train), data.num_eval_images(config)


def check_images(images, batch):
  """images: float32 [batch, RES, RES, 3] in [0, 1]."""
  assert images.shape == (batch, RES, RES, 3)
  assert images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def eval_images(config):
  """float32 [N, RES, RES, 3]: every valid eval image, in index order."""
  batches = list(data.make_eval_batches(config))
  for batch in batches:
    check_images(batch["image"], 3)
  index = np.concatenate([b["index"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(index, np.arange(len(index)))
  return np.concatenate([b["image"][b["valid"]] for b in batches])


def jpeg_bytes(array: np.ndarray, mode: str = "RGB") -> bytes:
  """uint8 [H, W, 3] -> JPEG bytes in `mode` ('RGB', 'L' or 'CMYK')."""
  buffer = io.BytesIO()
  Image.fromarray(array).convert(mode).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def constant_image(value: int, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3] of one grey level (survives JPEG and resizing)."""
  return np.full((height, width, 3), value, np.uint8)


def decoded(encoded: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(encoded)) as image:
    return np.asarray(image)


# ------------------------------------------------------------- mock_data


def write_fake_metadata(data_dir, tfds_name: str, split_sizes: dict[str, int]) -> None:
  """The metadata files of a prepared array_record dataset, without data.

  With `tfds.testing.mock_data(policy=USE_FILES, data_dir=data_dir)` the
  builder then reads as prepared and its data sources serve random examples.
  """
  builder = tfds.builder(tfds_name, data_dir=str(data_dir))
  template = tfds.core.ShardedFileTemplate(
    data_dir=builder.data_path,
    template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
    dataset_name=builder.name,
    filetype_suffix="array_record",
  )
  builder.info.set_splits(
    tfds.core.SplitDict(
      [
        tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0, filename_template=template)
        for split, n in split_sizes.items()
      ]
    )
  )
  builder.info.set_file_format("array_record", override=True)
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)


@pytest.mark.parametrize(
  "name, tfds_name, splits",
  [
    ("celeb_a", "celeb_a", ("train", "validation", "test")),
    ("imagenette", "imagenette/320px-v2", ("train", "validation")),
  ],
)
def test_catalogue_batches_with_mock_data(tmp_path, name, tfds_name, splits):
  write_fake_metadata(tmp_path, tfds_name, {s: 7 for s in splits})
  config = make_config(tmp_path, name)
  with tfds.testing.mock_data(
    num_examples=7, data_dir=str(tmp_path), policy=tfds.testing.MockPolicy.USE_FILES
  ):
    data.check_dataset(config)
    for batch in take(data.make_train_iterator(config), 3):
      assert set(batch) == {"image"}
      check_images(batch["image"], 4)
    assert data.num_eval_images(config) == 7
    first, second = eval_images(config), eval_images(config)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (7, RES, RES, 3)
    # Mock images are random noise (imagenette: of random sizes from 5 to
    # 50 pixels, some below RES, so resized up): all distinct.
    assert len({im.tobytes() for im in first}) == 7
    raw = datasets.load(options_lib.from_config(config)).eval
    sides = [min(raw[i]["image"].shape[:2]) for i in range(len(raw))]
    assert (min(sides) < RES) == (name == "imagenette")
  assert "tensorflow" not in sys.modules


# ---------------------------------------------------- real fake CelebA

_CELEB_A_PARTITION = [0, 0, 0, 1, 1, 2, 2]  # Images 1-7: 3 train, 2, 2.


def _write_lines(path, lines):
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def make_celeb_a_manual_dir(root) -> str:
  """The five CelebA files, 7 images whose grey level is 30 * index."""
  root = str(root)
  os.makedirs(root)
  names = [f"{i:06d}.jpg" for i in range(1, len(_CELEB_A_PARTITION) + 1)]
  with zipfile.ZipFile(os.path.join(root, "img_align_celeba.zip"), "w") as z:
    for i, name in enumerate(names, start=1):
      z.writestr(f"img_align_celeba/{name}", jpeg_bytes(constant_image(30 * i, 218, 178)))
  _write_lines(
    os.path.join(root, "list_eval_partition.txt"),
    [f"{n} {p}" for n, p in zip(names, _CELEB_A_PARTITION, strict=True)],
  )
  attrs = catalogue._celeb_a_lib.ATTR_HEADINGS  # pylint: disable=protected-access
  _write_lines(
    os.path.join(root, "list_attr_celeba.txt"),
    [str(len(names)), " ".join(attrs)] + [f"{n} " + " ".join(["1", "-1"] * 20) for n in names],
  )
  marks = catalogue._celeb_a_lib.LANDMARK_HEADINGS  # pylint: disable=protected-access
  _write_lines(
    os.path.join(root, "list_landmarks_align_celeba.txt"),
    [str(len(names)), " ".join(marks)] + [f"{n} " + " ".join(["70"] * 10) for n in names],
  )
  _write_lines(os.path.join(root, "identity_CelebA.txt"), [f"{n} {i}" for i, n in enumerate(names)])
  return root


def registered_as(monkeypatch, builder_cls, directory, urls) -> None:
  """Makes `builder_cls` expect the files in `directory` (url -> file name)."""
  infos = {
    url: checksums.compute_url_info(os.path.join(directory, name)) for url, name in urls.items()
  }
  monkeypatch.setattr(builder_cls, "url_infos", infos)


def celeb_a_urls() -> dict[str, str]:
  infos = catalogue.CelebAFromManualFiles.url_infos
  return {url: info.filename for url, info in infos.items()}


def test_celeb_a_prepared_from_manual_files(tmp_path, monkeypatch):
  manual = make_celeb_a_manual_dir(tmp_path / "manual")
  registered_as(monkeypatch, catalogue.CelebAFromManualFiles, manual, celeb_a_urls())
  config = make_config(tmp_path / "tfds", "celeb_a", path=manual)
  data.check_dataset(config)
  for batch in take(data.make_train_iterator(config), 2):
    check_images(batch["image"], 4)
  assert counts(config) == (3, 2)
  levels = lambda images: sorted(round(float(im.mean()) * 255 / 30) for im in images)
  assert levels(eval_images(config)) == [6, 7]  # Official test split.
  config.dataset.eval_split = "validation"
  assert levels(eval_images(config)) == [4, 5]
  prepared = tfds.builder("celeb_a", data_dir=str(tmp_path / "tfds"))
  assert prepared.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  example = prepared.as_data_source("train")[0]
  assert example["image"].shape == (218, 178, 3)
  assert len(example["attributes"]) == 40
  # Prepared data are used without the manual files.
  config.dataset.path = None
  data.check_dataset(config)
  assert data.num_eval_images(config) == 2
  assert "tensorflow" not in sys.modules


def test_celeb_a_files_not_matching_tfds_checksums(tmp_path):
  manual = make_celeb_a_manual_dir(tmp_path / "manual")
  config = make_config(tmp_path / "tfds", "celeb_a", path=manual)
  data.check_dataset(config)  # All five files are there.
  with pytest.raises(ConfigError, match="differs from the one TFDS") as info:
    data.make_train_iterator(config)
  assert "\n" not in str(info.value)


# ------------------------------------------------ real fake Imagenette

_WNIDS = ("n01440764", "n02102040", "n02979186")


def make_imagenette(root, archive: bool) -> str:
  """imagenette2-320/{train,val}/<wnid>/*.JPEG: 6 train, 3 val images.

  Includes a greyscale and a CMYK JPEG, and a non-JPEG file that is skipped.
  Returns the manual directory.
  """
  root = str(root)
  files = {}
  for split, count in (("train", 2), ("val", 1)):
    for c, wnid in enumerate(_WNIDS):
      for k in range(count):
        mode = {(0, 0): "L", (1, 0): "CMYK"}.get((c, k), "RGB")
        image = constant_image(40 + 50 * c, 30 + 7 * k, 40)
        files[f"imagenette2-320/{split}/{wnid}/{wnid}_{split}{k}.JPEG"] = jpeg_bytes(image, mode)
  files["imagenette2-320/noisy_imagenette.csv"] = b"path,label\n"
  os.makedirs(root)
  if archive:
    with tarfile.open(os.path.join(root, "imagenette2-320.tgz"), "w:gz") as t:
      for name, payload in files.items():
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
  else:
    for name, payload in files.items():
      os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
      with open(os.path.join(root, name), "wb") as f:
        f.write(payload)
  return root


@pytest.mark.parametrize("archive", [True, False], ids=["tgz", "folder"])
def test_imagenette_prepared_from_manual_files(tmp_path, monkeypatch, archive):
  manual = make_imagenette(tmp_path / "manual", archive)
  if archive:
    registered_as(
      monkeypatch,
      catalogue.ImagenetteFromManualFiles,
      manual,
      {catalogue.imagenette_url("imagenette2-320"): "imagenette2-320.tgz"},
    )
  config = make_config(tmp_path / "tfds", "imagenette", path=manual, eval_max_images=0)
  data.check_dataset(config)
  check_images(next(data.make_train_iterator(config))["image"], 4)
  assert counts(config)[0] == 6
  images = eval_images(config)
  assert images.shape == (3, RES, RES, 3)
  prepared = tfds.builder("imagenette/320px-v2", data_dir=str(tmp_path / "tfds"))
  source = prepared.as_data_source("validation")
  names = prepared.info.features["label"].names
  got = {}
  for i in range(len(source)):
    example = source[i]
    image = example["image"]
    assert image.shape[2] == 3 and image.dtype == np.uint8
    got[names[example["label"]]] = image
  assert set(got) == set(_WNIDS)
  for c, wnid in enumerate(_WNIDS):  # Grey levels survive every mode as RGB.
    assert abs(float(got[wnid].mean()) - (40 + 50 * c)) < 3
    assert np.ptp(got[wnid].reshape(-1, 3).mean(0)) < 3


# --------------------------------------------------------- MIT-Indoor67

_CLASSES = ("kitchen", "bar", "airport_inside")  # Sorted: airport, bar, kitchen.


def make_indoor(root, archive: bool) -> str:
  """DIR laid out like the official download: 3 classes, 3 + 1 per class.

  bar/ has a greyscale JPEG (train) and kitchen/ a CMYK one (test); each
  class has one unlisted image. Grey level of an image: 20 + 60 * class
  index in _CLASSES + 5 * k. Returns DIR.
  """
  root = str(root)
  os.makedirs(root)
  files, train, test = {}, [], []
  for c, name in enumerate(_CLASSES):
    for k in range(5):
      mode = "L" if (name, k) == ("bar", 1) else ("CMYK" if (name, k) == ("kitchen", 3) else "RGB")
      image = constant_image(20 + 60 * c + 5 * k, 24 + 3 * k, 32)
      entry = f"{name}/{name}_{k:02d}.jpg"
      files[entry] = jpeg_bytes(image, mode)
      if k < 3:
        train.append(entry)
      elif k == 3:
        test.append(entry)
  _write_lines(os.path.join(root, "TrainImages.txt"), train)
  _write_lines(os.path.join(root, "TestImages.txt"), test)
  if archive:
    with tarfile.open(os.path.join(root, mit_indoor67.ARCHIVE), "w") as t:
      for entry, payload in files.items():
        info = tarfile.TarInfo(f"Images/{entry}")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
  else:
    for entry, payload in files.items():
      path = os.path.join(root, "Images", entry)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(payload)
  return root


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar"])
def test_mit_indoor67(tmp_path, archive):
  manual = make_indoor(tmp_path / "manual", archive)
  config = make_config(tmp_path / "tfds", "mit_indoor67", path=manual)
  data.check_dataset(config)
  for batch in take(data.make_train_iterator(config), 3):
    check_images(batch["image"], 4)
  assert counts(config) == (9, 3)
  first, second = eval_images(config), eval_images(config)
  np.testing.assert_array_equal(first, second)

  builder = mit_indoor67.MitIndoor67Builder(
    data_dir=str(tmp_path / "tfds"), file_format="array_record"
  )
  assert builder.data_dir == os.path.join(str(tmp_path / "tfds"), "mit_indoor67", "1.0.0")
  names = builder.info.features["label"].names
  assert names == sorted(_CLASSES)
  for split, count in (("train", 9), ("test", 3)):
    source = builder.as_data_source(split)
    assert len(source) == count
    for i in range(count):
      example = source[i]
      entry = example["id"].decode()
      cls, file = entry.split("/")
      k = int(file[-6:-4])
      assert (k < 3) == (split == "train")
      assert names[example["label"]] == cls
      image = example["image"]
      assert image.shape == (24 + 3 * k, 32, 3) and image.dtype == np.uint8
      level = 20 + 60 * _CLASSES.index(cls) + 5 * k
      assert abs(float(image.mean()) - level) < 3, entry  # CMYK: right colours.
      assert np.ptp(image.reshape(-1, 3).mean(0)) < 3, entry  # Grey stays grey.


def test_mit_indoor67_prepared_data_need_no_path(tmp_path):
  manual = make_indoor(tmp_path / "manual", archive=False)
  config = make_config(tmp_path / "tfds", "mit_indoor67", path=manual, eval_split="train")
  assert data.num_eval_images(config) == 9
  config.dataset.path = None
  data.check_dataset(config)
  assert data.num_eval_images(config) == 9


@pytest.mark.parametrize("split_file", ["TrainImages.txt", "TestImages.txt"])
def test_mit_indoor67_missing_split_file(tmp_path, split_file):
  manual = make_indoor(tmp_path / "manual", archive=True)
  os.remove(os.path.join(manual, split_file))
  config = make_config(tmp_path / "tfds", "mit_indoor67", path=manual)
  with pytest.raises(ConfigError, match="missing split file") as info:
    data.check_dataset(config)
  assert os.path.join(manual, split_file) in str(info.value)


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar"])
def test_mit_indoor67_listed_image_absent(tmp_path, archive):
  manual = make_indoor(tmp_path / "manual", archive)
  with open(os.path.join(manual, "TestImages.txt"), "a") as f:
    f.write("bar/not_there.jpg\n")
  config = make_config(tmp_path / "tfds", "mit_indoor67", path=manual)
  data.check_dataset(config)  # Cheap checks do not list the images.
  with pytest.raises(
    ConfigError, match="bar/not_there.jpg listed in TestImages.txt does not exist"
  ) as info:
    data.make_train_iterator(config)
  assert "\n" not in str(info.value)


def test_mit_indoor67_undecodable_image(tmp_path):
  manual = make_indoor(tmp_path / "manual", archive=False)
  bad = os.path.join(manual, "Images", "bar", "bar_00.jpg")
  with open(bad, "wb") as f:
    f.write(b"not a jpeg")
  config = make_config(tmp_path / "tfds", "mit_indoor67", path=manual)
  with pytest.raises(ConfigError) as info:
    data.make_train_iterator(config)
  assert str(info.value).startswith(f"cannot read image {bad}: ")


def test_mit_indoor67_bad_paths(tmp_path):
  config = make_config(tmp_path / "tfds", "mit_indoor67")
  with pytest.raises(ConfigError, match="config.dataset.path is not set"):
    data.check_dataset(config)
  config.dataset.path = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match="no such directory"):
    data.check_dataset(config)
  empty = tmp_path / "lists_only"
  empty.mkdir()
  for name in ("TrainImages.txt", "TestImages.txt"):
    (empty / name).write_text("bar/x.jpg\n")
  config.dataset.path = str(empty)
  with pytest.raises(ConfigError, match="indoorCVPR_09.tar exists"):
    data.check_dataset(config)


# ------------------------------------------------ checks and options


@pytest.mark.parametrize(
  "name, first_file",
  [
    ("celeb_a", "list_eval_partition.txt"),
    ("imagenette", "imagenette2-320.tgz"),
  ],
)
def test_catalogue_not_available_is_a_config_error(tmp_path, name, first_file):
  config = make_config(tmp_path / "tfds", name)
  with pytest.raises(ConfigError, match="is unset and the default manual dir") as info:
    data.check_dataset(config)
  message = str(info.value)
  assert "\n" not in message and first_file in message
  assert os.path.join(str(tmp_path / "tfds"), "downloads", "manual") in message
  config.dataset.path = str(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match="no such directory"):
    data.check_dataset(config)
  partial = tmp_path / "partial"
  partial.mkdir()
  (partial / "unrelated.txt").write_text("")
  config.dataset.path = str(partial)
  with pytest.raises(ConfigError, match=f"lacks .*{first_file}"):
    data.make_train_iterator(config)  # Fails before any TFDS call too.


def test_catalogue_tfrecord_data_are_rejected(tmp_path):
  builder = tfds.builder("celeb_a", data_dir=str(tmp_path))
  builder.info.set_file_format("tfrecord", override=True)
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  with pytest.raises(ConfigError, match="as tfrecord, not array_record"):
    data.check_dataset(make_config(tmp_path, "celeb_a"))


def test_recipes_and_precedence(tmp_path):
  def resolved(name, **dataset):
    return options_lib.from_config(make_config(tmp_path, name, **dataset))

  imagenette = resolved("imagenette")
  assert (
    imagenette.eval_split,
    imagenette.random_crop,
    imagenette.flip,
    imagenette.train_resize,
  ) == ("validation", True, True, RES * 320 // 182)
  celeb_a = resolved("celeb_a")
  assert (celeb_a.eval_split, celeb_a.random_crop, celeb_a.flip, celeb_a.train_resize) == (
    "test",
    False,
    False,
    RES,
  )
  indoor = resolved("mit_indoor67")
  assert (indoor.eval_split, indoor.random_crop, indoor.flip) == ("test", False, True)
  folder = resolved("image_folder")
  assert (folder.eval_split, folder.random_crop, folder.flip, folder.train_resize) == (
    "",
    False,
    False,
    RES,
  )
  # Values set in the config win.
  explicit = resolved(
    "imagenette", random_crop=False, flip=False, train_resize=20, eval_split="train"
  )
  assert (explicit.eval_split, explicit.random_crop, explicit.flip, explicit.train_resize) == (
    "train",
    False,
    False,
    20,
  )
  assert resolved("celeb_a", eval_split="", flip=True).flip
  assert resolved("celeb_a", eval_split="").eval_split == "test"
  # Another dataset than the config's: its own eval split default.
  config = make_config(tmp_path, "celeb_a", eval_split="validation")
  assert options_lib.from_config(config, "mit_indoor67").eval_split == "test"


@pytest.mark.parametrize(
  "name, dataset, match",
  [
    (
      "celeb_a",
      {"eval_split": "val"},
      r"eval_split='val' is not a split of celeb_a; valid: train, validation",
    ),
    ("imagenette", {"eval_split": "test"}, "not a split of imagenette"),
    ("image_folder", {"eval_split": "test"}, "is not used by"),
    ("celeb_a", {"flip": "yes"}, "config.dataset.flip must be a bool"),
    ("imagenette", {"train_resize": 8}, "config.dataset.train_resize=8"),
  ],
)
def test_bad_options(tmp_path, name, dataset, match):
  with pytest.raises(ConfigError, match=match):
    data.check_dataset(make_config(tmp_path, name, **dataset))
