"""Host-side image ops (numpy and PIL only, no jax, no TensorFlow).

The `*_transform` functions are the grain pipelines' per-example maps (uint8 [H, W, 3] ->
float32 [R, R, 3] in [0, 1]); they are module-level so that they pickle into worker processes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
  """16/32-bit greyscale -> 8-bit 'L'; full scale guessed from the maximum.

  Full scale is 1 for float images with values <= 1, else 255 if no value
  exceeds it, else 65535.
  """
  array = np.asarray(image, dtype=np.float64)
  peak = array.max(initial=0)
  if image.mode == "F" and peak <= 1:
    full_scale = 1.0
  else:
    full_scale = 255.0 if peak <= 255 else 65535.0
  array = np.clip(array / full_scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return Image.fromarray(array)


def pil_to_rgb(image: Image.Image) -> Image.Image:
  """Any PIL image -> mode 'RGB' (EXIF rotation applied).

  Greyscale and palette images are replicated to 3 channels; transparency
  (RGBA, LA, palette/greyscale with a transparent colour) is composited over
  white, so hidden colours of fully transparent pixels never show.

  Args:
    image: a loaded PIL image of any mode.

  Returns:
    An 'RGB' image, upright as a viewer would show it.
  """
  image = ImageOps.exif_transpose(image)
  if image.mode in _HIGH_BIT_DEPTH_MODES:
    image = _high_bit_depth_to_l(image)
  has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or ("transparency" in image.info)
  if has_alpha:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
  return image.convert("RGB")


def array_to_rgb(array: np.ndarray) -> np.ndarray:
  """uint8 [H, W] or [H, W, 1|3|4] -> uint8 [H, W, 3] (alpha over white)."""
  array = np.asarray(array)
  if array.dtype == bool:
    array = array.astype(np.uint8) * 255
  if array.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got {array.dtype}")
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
    raise ValueError(f"expected an image [H, W, 1|3|4], got {array.shape}")
  if array.shape[-1] == 1:
    return np.repeat(array, 3, axis=-1)
  if array.shape[-1] == 4:
    return np.asarray(pil_to_rgb(Image.fromarray(array)))
  return array


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bicubic (antialiased) resize: uint8 [H, W, 3] -> [height, width, 3]."""
  if image.shape[:2] == (height, width):
    return image
  pil = Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC)
  return np.asarray(pil)


def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes so the short side is `size` (up or down), keeping aspect.

  Args:
    image: uint8 [H, W, 3].
    size: target length of the short side.

  Returns:
    uint8 [h, w, 3] with min(h, w) == size and max(h, w) >= size.
  """
  height, width = image.shape[:2]
  if height <= width:
    new_height, new_width = size, max(size, round(width * size / height))
  else:
    new_height, new_width = max(size, round(height * size / width)), size
  return resize(image, new_height, new_width)


def crop(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, 3] -> the window [top:top+height, left:left+width]."""
  return image[top : top + height, left : left + width]


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] with H, W >= size -> central uint8 [size, size, 3]."""
  height, width = image.shape[:2]
  return crop(image, (height - size) // 2, (width - size) // 2, size, size)


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 [H, W, 3] with H, W >= size -> uniform random [size, size, 3]."""
  height, width = image.shape[:2]
  top = int(rng.integers(0, height - size + 1))
  left = int(rng.integers(0, width - size + 1))
  return crop(image, top, left, size, size)


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors [H, W, C] left-right with probability 1/2."""
  return image[:, ::-1] if rng.random() < 0.5 else image


def to_float(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] -> contiguous float32 [H, W, 3] in [0, 1]."""
  return np.ascontiguousarray(image, dtype=np.float32) / np.float32(255.0)


def eval_transform(example: dict, *, resolution: int) -> dict:
  """Short side to R, centre crop R: {'image': float32 [R, R, 3]}.

  Args:
    example: {'image': uint8 [H, W] or [H, W, 1|3|4], ...} (made RGB by
      `array_to_rgb`); other keys are dropped.
    resolution: R.

  Returns:
    {'image': float32 [R, R, 3]} in [0, 1].
  """
  image = resize_short_side(array_to_rgb(example["image"]), resolution)
  return {"image": to_float(center_crop(image, resolution))}


def train_transform(
  example: dict,
  rng: np.random.Generator,
  *,
  resolution: int,
  resize_to: int,
  random: bool,
  flip: bool,
) -> dict:
  """Train map of whole-image datasets: {'image': float32 [R, R, 3]}.

  With `random`, the short side goes to `resize_to` (>= R), then a random
  R x R window is taken; otherwise it is `eval_transform` (short side to R,
  centre crop). `flip` mirrors with probability 1/2.

  Args:
    example: {'image': uint8 [H, W] or [H, W, 1|3|4], ...} (made RGB by
      `array_to_rgb`); other keys are dropped.
    rng: grain's per-element generator.
    resolution: R.
    resize_to: short side before the random crop (only with `random`).
    random: random crop instead of centre crop.
    flip: random horizontal flip.

  Returns:
    {'image': float32 [R, R, 3]} in [0, 1].
  """
  image = array_to_rgb(example["image"])
  if random:
    image = random_crop(resize_short_side(image, resize_to), resolution, rng)
  else:
    image = center_crop(resize_short_side(image, resolution), resolution)
  if flip:
    image = random_flip(image, rng)
  return {"image": to_float(image)}
