"""`demo`: crops of the photographs shipped inside scikit-image (no download).

12 photos for training (random crops), 3 held out (`chelsea`, `coffee`, `coins`: a fixed grid of
crops each); see docs/datasets.md.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from skimage import data as skdata

from minr_jax.data import base, preprocess, tfds_utils
from minr_jax.data import options as options_lib

BUILDER_NAME = "demo"
TRAIN, EVAL = "train", "validation"  # TFDS split names.


def _motorcycle_left() -> np.ndarray:
  return skdata.stereo_motorcycle()[0]


# Photo name -> loader of a uint8 [H, W] or [H, W, 3] array.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
  "astronaut": skdata.astronaut,
  "rocket": skdata.rocket,
  "hubble_deep_field": skdata.hubble_deep_field,
  "immunohistochemistry": skdata.immunohistochemistry,
  "retina": skdata.retina,
  "motorcycle_left": _motorcycle_left,
  "camera": skdata.camera,
  "moon": skdata.moon,
  "brick": skdata.brick,
  "grass": skdata.grass,
  "gravel": skdata.gravel,
  "clock": skdata.clock,
  "chelsea": skdata.chelsea,
  "coffee": skdata.coffee,
  "coins": skdata.coins,
}
EVAL_PHOTOS = ("chelsea", "coffee", "coins")
TRAIN_PHOTOS = tuple(n for n in PHOTOS if n not in EVAL_PHOTOS)


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


class DemoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The scikit-image photos, one example per photo, in PHOTOS order."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  # Nothing to download. Also keeps TFDS from looking for a checksums file
  # next to this module, which needs the `importlib_resources` package.
  url_infos = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="Photographs shipped with scikit-image (skimage.data).",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "id": tfds.features.Text(),
        }
      ),
      disable_shuffling=True,  # Keep PHOTOS order: it defines eval indices.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {
      TRAIN: self._generate_examples(TRAIN_PHOTOS),
      EVAL: self._generate_examples(EVAL_PHOTOS),
    }

  def _generate_examples(self, names: tuple[str, ...]):
    for name in names:
      image = preprocess.array_to_rgb(PHOTOS[name]())
      yield name, {"image": _png(image), "id": name}


@functools.lru_cache(maxsize=4)
def _photos(data_dir: str, split: str) -> tuple[dict, ...]:
  """Decoded photos of `split`: ({'image': uint8 [H, W, 3], 'id': str}, ...)."""
  builder = DemoBuilder(data_dir=data_dir, file_format=tfds_utils.FILE_FORMAT)
  tfds_utils.prepare(builder)
  photos = []
  for example in tfds_utils.split_source(builder, split):
    image = np.asarray(example["image"])
    image.flags.writeable = False
    name = example["id"]
    photos.append({"image": image, "id": name.decode() if isinstance(name, bytes) else name})
  return tuple(photos)


def _grid_offsets(length: int, crop: int, count: int) -> list[int]:
  """`count` evenly spaced crop starts along a side (centred if count = 1)."""
  if count == 1:
    return [(length - crop) // 2]
  return [round(i * (length - crop) / (count - 1)) for i in range(count)]


def grid_crop(
  index: int, *, photos: tuple[dict, ...], crops_per_image: int, crop_size: int
) -> dict:
  """Eval example `index`: a fixed crop of a held-out photo.

  Args:
    index: in [0, len(photos) * crops_per_image).
    photos: decoded photos ({'image': uint8 [H, W, 3], 'id': str}).
    crops_per_image: crops per photo, laid out on a rows x cols grid with
      rows = floor(sqrt(n)), cols = ceil(n / rows), row-major.
    crop_size: side of the crop, clamped to the photo's short side.

  Returns:
    {'image': uint8 [c, c, 3], 'id': '<photo>/<crop index>'}.
  """
  photo = photos[index // crops_per_image]
  k = index % crops_per_image
  image = photo["image"]
  height, width = image.shape[:2]
  size = min(crop_size, height, width)
  rows = max(1, math.isqrt(crops_per_image))
  cols = math.ceil(crops_per_image / rows)
  row, col = divmod(k, cols)
  top = _grid_offsets(height, size, rows)[row]
  left = _grid_offsets(width, size, cols)[col]
  return {"image": preprocess.crop(image, top, left, size, size), "id": f"{photo['id']}/{k}"}


def random_crop_transform(
  example: dict, rng: np.random.Generator, *, crop_size: int, resolution: int, flip: bool
) -> dict:
  """Train map: random square crop of a photo -> {'image': float32 [R, R, 3]}.

  Args:
    example: {'image': uint8 [H, W, 3], ...}.
    rng: grain's per-element generator.
    crop_size: crop side, clamped to the photo's short side.
    resolution: R.
    flip: random horizontal flip.

  Returns:
    {'image': float32 [R, R, 3]} in [0, 1].
  """
  image = example["image"]
  size = min(crop_size, *image.shape[:2])
  image = preprocess.random_crop(image, size, rng)
  image = preprocess.resize(image, resolution, resolution)
  if flip:
    image = preprocess.random_flip(image, rng)
  return {"image": preprocess.to_float(image)}


def load(options: options_lib.DataOptions) -> base.Dataset:
  """The demo photos with their crop maps (docs/datasets.md).

  Args:
    options: uses data_dir, crop_size, eval_crops_per_image, resolution, flip.

  Returns:
    Train source of 12 photos, eval source of 3 * eval_crops_per_image fixed
    crops, and maps to {'image': float32 [R, R, 3]}.
  """
  eval_photos = _photos(options.data_dir, EVAL)
  n = options.eval_crops_per_image
  eval_crops = grain.MapDataset.range(len(eval_photos) * n).map(
    functools.partial(grid_crop, photos=eval_photos, crops_per_image=n, crop_size=options.crop_size)
  )
  return base.Dataset(
    train=grain.MapDataset.source(list(_photos(options.data_dir, TRAIN))),
    eval=eval_crops,
    train_transform=functools.partial(
      random_crop_transform,
      crop_size=options.crop_size,
      resolution=options.resolution,
      flip=options.flip,
    ),
    # Crops are square: short side to R + centre crop = resize to R x R.
    eval_transform=functools.partial(preprocess.eval_transform, resolution=options.resolution),
  )
