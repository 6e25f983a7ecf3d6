"""`cartoon_faces`: procedurally drawn cartoon faces (no files, no download).

The domain of the demo (docs/demo.md): training faces are drawn afresh at every use, eval face i
from SeedSequence([EVAL_SEED, i]), identical on every machine.
"""

from __future__ import annotations

import functools

import grain
import numpy as np

from minr_jax.data import base, preprocess
from minr_jax.data import options as options_lib

TRAIN_IMAGES = 10_000  # examples per training pass (each one drawn afresh).
EVAL_IMAGES = 256  # fixed held-out faces.
EVAL_SEED = 20_231_001  # root of the held-out faces' generators.

_EYE_WHITE = np.array([0.97, 0.97, 0.95])
_SKIN = np.array([0.95, 0.75, 0.6])
_LIPS = np.array([0.75, 0.2, 0.25])


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates (y, x), each [size, size], in (0, 1)."""
  y, x = np.mgrid[0:size, 0:size].astype(np.float64)
  return (y + 0.5) / size, (x + 0.5) / size


def _ellipse(
  y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float, size: int
) -> np.ndarray:
  """Anti-aliased coverage [size, size, 1] in [0, 1] of a rotated ellipse.

  Centre (cy, cx) and radii (ry, rx) in image units ([0, 1] = the image side);
  the edge is a one-pixel ramp of an approximate signed distance.
  """
  c, s = np.cos(angle), np.sin(angle)
  u = c * (x - cx) + s * (y - cy)
  v = -s * (x - cx) + c * (y - cy)
  r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
  outside = (r - 1.0) * min(rx, ry) * size  # ~ pixels outside the edge
  return np.clip(0.5 - outside, 0.0, 1.0)[..., None]


def draw_face(rng: np.random.Generator, size: int) -> np.ndarray:
  """One cartoon face, uint8 [size, size, 3], drawn from `rng`."""
  y, x = _grid(size)

  def paint(img, colour, cover):
    return img + (np.asarray(colour) - img) * cover

  # Background: a linear gradient between two random colours.
  c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
  a = rng.uniform(0, 2 * np.pi)
  t = np.clip(np.cos(a) * (x - 0.5) + np.sin(a) * (y - 0.5) + 0.5, 0, 1)[..., None]
  img = c0 + (c1 - c0) * t
  # Head frame: centre, radii, tilt.
  cx, cy = 0.5 + rng.normal(0, 0.03), 0.53 + rng.normal(0, 0.03)
  rx, ry = rng.uniform(0.26, 0.34), rng.uniform(0.32, 0.40)
  tilt = rng.normal(0, 0.08)
  skin = _SKIN * rng.uniform(0.35, 1.05) + rng.normal(0, 0.04, 3)
  hair = rng.uniform(0, 1, 3) * rng.uniform(0.2, 1.0)
  hair_up = rng.uniform(0.04, 0.10)
  img = paint(img, hair, _ellipse(y, x, cy - hair_up, cx, ry * 0.98, rx * 1.12, tilt, size))
  shade = 1.0 - 0.25 * np.clip((x - cx) / rx, -1, 1)[..., None] * rng.uniform(-1, 1)
  img = paint(img, np.clip(skin * shade, 0, 1), _ellipse(y, x, cy, cx, ry, rx, tilt, size))
  fringe = rng.uniform(0.45, 0.8)
  img = paint(img, hair, _ellipse(y, x, cy - ry * fringe, cx, ry * 0.45, rx * 0.95, tilt, size))
  ct, st = np.cos(tilt), np.sin(tilt)

  def at(dx, dy):  # a point given in the head's (tilted) frame
    return cy + st * dx + ct * dy, cx + ct * dx - st * dy

  # Eyes, looking the same way, and brows.
  ex, ey = rx * rng.uniform(0.35, 0.5), -ry * rng.uniform(0.05, 0.2)
  erx, ery = rx * rng.uniform(0.18, 0.26), ry * rng.uniform(0.08, 0.14)
  gx, gy = rng.uniform(-0.4, 0.4) * erx, rng.uniform(-0.3, 0.3) * ery
  iris = rng.uniform(0, 0.8, 3)
  brow_up = rng.uniform(0.1, 0.3)
  for side in (-1, 1):
    py, px = at(side * ex, ey)
    img = paint(img, _EYE_WHITE, _ellipse(y, x, py, px, ery, erx, tilt, size))
    iy, ix = at(side * ex + gx, ey + gy)
    img = paint(img, iris, _ellipse(y, x, iy, ix, ery * 0.9, ery * 0.9, 0.0, size))
    img = paint(img, 0.05, _ellipse(y, x, iy, ix, ery * 0.45, ery * 0.45, 0.0, size))
    by, bx = at(side * ex, ey - ery - ry * brow_up * 0.5)
    img = paint(
      img,
      hair * 0.7,
      _ellipse(y, x, by, bx, ry * 0.03, erx * 1.1, tilt + side * rng.normal(0, 0.1), size),
    )
  # Nose and mouth.
  ny, nx = at(0.0, ry * rng.uniform(0.12, 0.22))
  img = paint(img, skin * 0.75, _ellipse(y, x, ny, nx, ry * 0.12, rx * 0.08, tilt, size))
  my, mx = at(0.0, ry * rng.uniform(0.45, 0.6))
  lips = _LIPS * rng.uniform(0.6, 1.1)
  img = paint(
    img,
    lips,
    _ellipse(y, x, my, mx, ry * rng.uniform(0.05, 0.14), rx * rng.uniform(0.25, 0.45), tilt, size),
  )
  return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def eval_face(index: int, *, resolution: int) -> dict:
  """Held-out example `index`: {'image': uint8 [R, R, 3], 'id': 'face/<index>'}."""
  rng = np.random.default_rng(np.random.SeedSequence([EVAL_SEED, int(index)]))
  return {"image": draw_face(rng, resolution), "id": f"face/{int(index)}"}


def train_face(example: dict, rng: np.random.Generator, *, resolution: int, flip: bool) -> dict:
  """Train map: a new face from grain's per-element rng -> {'image': float32 [R, R, 3]}.

  `example` (the pass position) is not used: the face depends on the rng only.
  """
  del example
  image = draw_face(rng, resolution)
  if flip:
    image = preprocess.random_flip(image, rng)
  return {"image": preprocess.to_float(image)}


def load(options: options_lib.DataOptions) -> base.Dataset:
  """The cartoon faces; nothing is read or written.

  Args:
    options: uses resolution and flip.

  Returns:
    Train source of TRAIN_IMAGES positions (each drawn afresh), eval source
    of EVAL_IMAGES fixed faces, and maps to {'image': float32 [R, R, 3]}.
  """
  r = options.resolution
  return base.Dataset(
    train=grain.MapDataset.range(TRAIN_IMAGES),
    eval=grain.MapDataset.range(EVAL_IMAGES).map(functools.partial(eval_face, resolution=r)),
    train_transform=functools.partial(train_face, resolution=r, flip=options.flip),
    eval_transform=functools.partial(preprocess.eval_transform, resolution=r),
  )
