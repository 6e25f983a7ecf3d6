r"""Fill holes in photos of any size with a trained checkpoint: `inpaint`, `parse_mask`.

The function behind `Model.inpaint`, the app and `python -m minr_jax.inpaint`; mask formats and
how a photo meets a model trained at R x R pixels (resize or tiles): docs/inpaint.md.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import re

import numpy as np
from PIL import Image, ImageOps

from minr_jax import classical, masking, metrics, paths, similarity, writers
from minr_jax.config import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
RENDER_CHUNK = 8192  # coordinates per jitted INR call (one compile for every size)
MASK_FORMS = (
  "FILE.png (white = hidden), a box x0,y0,x1,y1 (pixels, or fractions "
  "with a decimal point), or STRATEGY:RATIO[:seed=N][:grid=N]"
)


# ------------------------------------------------------------------ masks ---


@dataclasses.dataclass(frozen=True)
class MaskArg:
  """A parsed --mask: kind 'file' (path), 'box' (box) or 'strategy' (its other fields)."""

  text: str
  kind: str
  path: str | None = None
  box: tuple[str, ...] | None = None
  strategy: str | None = None
  ratio: float | None = None
  seed: int = 0
  grid: int | None = None


def parse_mask(text: str) -> MaskArg:
  """Parses a --mask value (docs/inpaint.md); ConfigError with one line if it is none of them."""
  text = str(text).strip()
  bad = f"--mask={text!r} is not {MASK_FORMS}"
  if not text:
    raise ConfigError(f"--mask is empty: give {MASK_FORMS}")
  body = text[4:] if text.startswith("box:") else text
  if re.fullmatch(r"[^:]*,[^:]*,[^:]*,[^:]*", body) and not text.lower().endswith(IMAGE_EXTENSIONS):
    values = tuple(v.strip() for v in body.split(","))
    for v in values:
      if not re.fullmatch(r"\d+|\d*\.\d*", v) or v == ".":
        raise ConfigError(
          f"--mask={text!r}: box value {v!r} is not a non-negative integer "
          "(pixels) or a fraction like 0.25"
        )
      if "." in v and float(v) > 1:
        raise ConfigError(f"--mask={text!r}: fraction {v} is above 1")
    return MaskArg(text, "box", box=values)
  head = text.split(":", 1)[0]
  if head in masking.STRATEGIES:
    parts = text.split(":")
    if len(parts) < 2:
      raise ConfigError(f"--mask={text!r}: give a ratio, e.g. {head}:0.75")
    try:
      ratio = float(parts[1])
    except ValueError:
      raise ConfigError(f"--mask={text!r}: ratio {parts[1]!r} is not a number") from None
    if not 0 < ratio <= 1:
      raise ConfigError(f"--mask={text!r}: ratio {ratio:g} must be in (0, 1]")
    options = {"seed": 0, "grid": None}
    for part in parts[2:]:
      key, eq, value = part.partition("=")
      if key not in options or not eq or not re.fullmatch(r"\d+", value):
        raise ConfigError(f"--mask={text!r}: {part!r} is not seed=N or grid=N")
      options[key] = int(value)
    if options["grid"] == 0:
      raise ConfigError(f"--mask={text!r}: grid must be positive")
    return MaskArg(text, "strategy", strategy=head, ratio=ratio, **options)
  if text.lower().endswith(IMAGE_EXTENSIONS) or "/" in text or os.sep in text:
    return MaskArg(text, "file", path=text)
  raise ConfigError(bad)


def _box_mask(arg: MaskArg, height: int, width: int) -> np.ndarray:
  bounds = []
  for value, size in zip(arg.box, (width, height, width, height)):
    bounds.append(int(round(float(value) * size)) if "." in value else int(value))
  x0, y0, x1, y1 = bounds
  if x1 > width or y1 > height:
    raise ConfigError(
      f"--mask={arg.text}: the box ({x0},{y0})-({x1},{y1}) reaches outside "
      f"the {width}x{height} image"
    )
  mask = np.zeros((height, width), bool)
  mask[y0:y1, x0:x1] = True
  return mask


def _strategy_mask(
  arg: MaskArg, height: int, width: int, index: int, default_grid: int
) -> np.ndarray:
  """The strategy's [g, g] mask of (seed, index), each cell i covering rows floor(i H / g)..."""
  grid = arg.grid or default_grid
  spec = masking.MaskSpec(strategy=arg.strategy, grid=grid)
  cells = np.asarray(masking.draw_indexed(spec, arg.seed, np.asarray([index]), arg.ratio))[0]
  rows = np.arange(height) * grid // height
  cols = np.arange(width) * grid // width
  return cells[rows[:, None], cols[None, :]]


def read_mask_file(path: str) -> np.ndarray:
  """bool [H, W] of a mask image: True where its grey value is above 127 (white = hidden)."""
  with _open_image(path, "--mask") as img:
    return np.asarray(img.convert("L")) > 127


def photo_mask(
  arg: MaskArg | str,
  height: int,
  width: int,
  index: int = 0,
  default_grid: int = 8,
  file_mask: np.ndarray | None = None,
) -> np.ndarray:
  """The bool mask [height, width] (True = hidden) a --mask value gives an image."""
  if isinstance(arg, str):
    arg = parse_mask(arg)
  if arg.kind == "box":
    return _box_mask(arg, height, width)
  if arg.kind == "strategy":
    return _strategy_mask(arg, height, width, index, default_grid)
  return read_mask_file(arg.path) if file_mask is None else file_mask


def check_mask(mask: np.ndarray, height: int, width: int, name: str = "the image") -> np.ndarray:
  """mask as bool [height, width]; ConfigError if its size differs, it hides nothing or all."""
  mask = np.asarray(mask)
  if mask.ndim != 2 or mask.shape != (height, width):
    got = f"{mask.shape[1]}x{mask.shape[0]}" if mask.ndim == 2 else f"shape {list(mask.shape)}"
    raise ConfigError(f"the mask is {got} but {name} is {width}x{height} (width x height)")
  mask = mask.astype(bool)
  if not mask.any():
    raise ConfigError(f"the mask hides no pixel of {name}: nothing to inpaint")
  if mask.all():
    raise ConfigError(f"the mask hides every pixel of {name}: nothing to inpaint from")
  return mask


# ----------------------------------------------------------------- images ---


def _open_image(path: str, what: str = "--images"):
  try:
    data = paths.as_path(path, what).read_bytes()
    img = Image.open(io.BytesIO(data))
    img.load()
  except ConfigError:
    raise
  except FileNotFoundError:
    raise ConfigError(f"{what}: {path} does not exist") from None
  except Exception as e:  # noqa: BLE001 (PIL raises many types for a bad file)
    reason = " ".join(str(e).split())[:160] or type(e).__name__
    raise ConfigError(f"{what}: cannot read {path} as an image ({reason})") from None
  return ImageOps.exif_transpose(img)


def read_image(path: str) -> np.ndarray:
  """uint8 [H, W, C] of an image file: C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).

  EXIF orientation is applied (the image as a viewer shows it); palette
  images become RGB or RGBA.
  """
  with _open_image(path) as img:
    if img.mode in ("1", "L", "I", "I;16", "F"):
      img = img.convert("L")
    elif img.mode not in ("LA", "RGB", "RGBA"):
      img = img.convert(
        "RGBA" if "transparency" in img.info or img.mode in ("PA", "RGBa") else "RGB"
      )
    x = np.asarray(img)
  return x[..., None] if x.ndim == 2 else x


def list_images(path: str) -> list[tuple[str, str]]:
  """[(full path, relative name)] of one image file or every image below a folder, sorted."""
  text = os.fspath(path)
  paths.check_reachable(text, "--images")
  p = paths.as_path(text, "--images")
  if p.is_file():
    return [(text, posixpath.basename(text.rstrip("/")))]
  if not p.is_dir():
    raise ConfigError(f"--images={text}: no such file or folder")
  found = [
    (f"{text.rstrip('/')}/{rel}", rel)
    for rel in paths.files_under(text)
    if rel.lower().endswith(IMAGE_EXTENSIONS)
  ]
  if not found:
    raise ConfigError(
      f"--images={text}: the folder holds no image file ({', '.join(IMAGE_EXTENSIONS)})"
    )
  return found


def _split_channels(image) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, int]:
  """image [H, W] or [H, W, C] (C in 1..4; uint8 or float in [0, 1]) ->
  (rgb float32 [H, W, 3], colour float32 [H, W, 1 or 3], alpha [H, W, 1] or None, C)."""
  x = np.asarray(image)
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  elif np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  else:
    raise ConfigError(f"image must be uint8 or float in [0, 1], got {x.dtype}")
  if not np.isfinite(x).all() or x.min(initial=0) < 0 or x.max(initial=0) > 1:
    raise ConfigError(
      "image values must be finite and in [0, 1] (or uint8 0..255), got "
      f"{'non-finite values' if not np.isfinite(x).all() else 'values in '}"
      f"{'' if not np.isfinite(x).all() else f'[{x.min():g}, {x.max():g}]'}"
    )
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or x.shape[-1] not in (1, 2, 3, 4) or min(x.shape[:2]) < 1:
    raise ConfigError(f"image must be [H, W] or [H, W, C] with C in 1..4, got {list(x.shape)}")
  c = x.shape[-1]
  colour = x[..., :3] if c >= 3 else x[..., :1]
  alpha = x[..., -1:] if c in (2, 4) else None
  rgb = np.repeat(colour, 3, axis=-1) if colour.shape[-1] == 1 else colour
  return rgb, colour, alpha, c


# ------------------------------------------------------------ resampling ---


def area_matrix(src: int, dst: int) -> np.ndarray:
  """[dst, src] float64 weights of area resampling: target pixel j averages source pixels
  over its footprint [j src / dst, (j + 1) src / dst), each weighted by the overlap.

  Exact (integer overlaps in units of 1 / dst); every row sums to 1.
  """
  j = np.arange(dst)[:, None]
  i = np.arange(src)[None, :]
  lo = np.maximum(j * src, i * dst)
  hi = np.minimum((j + 1) * src, (i + 1) * dst)
  return np.maximum(hi - lo, 0) / float(src)


def to_model_grid(
  rgb: np.ndarray, mask: np.ndarray, resolution: int, grid: int
) -> tuple[np.ndarray, np.ndarray]:
  """(image float32 [R, R, 3], mask bool [R, R]) of a photo rgb [H, W, 3] with mask [H, W].

  1. Area resampling restricted to the visible pixels: each model pixel's
     value is the area-weighted mean of the visible photo pixels under its
     footprint; it counts as hidden when hidden photo pixels cover half of
     the footprint or more. Hidden photo pixels get weight 0: their values
     never reach the model.
  2. The model was trained on masks of whole patches (R / grid pixels
     square): a patch is hidden when half of its pixels or more are hidden,
     and the hidden pixels left in visible patches are filled by Gaussian
     interpolation of the visible ones (a partly blank patch is an input the
     model never saw in training).
  The mask returned is the patch mask at pixel level (hidden = zeroed).
  """
  rows, cols = area_matrix(rgb.shape[0], resolution), area_matrix(rgb.shape[1], resolution)
  visible = (~mask.astype(bool)).astype(np.float64)
  weight = rows @ visible @ cols.T  # visible fraction of each footprint
  h, w, c = rgb.shape
  total = rows @ (rgb.astype(np.float64) * visible[..., None]).reshape(h, w * c)  # [R, W C]
  total = (total.reshape(resolution, w, c).transpose(0, 2, 1) @ cols.T).transpose(0, 2, 1)
  pixel_mask = weight <= 0.5 + 1e-9
  image = (total / np.maximum(weight, 1e-12)[..., None]).astype(np.float32)
  image[pixel_mask] = 0.0
  p = resolution // grid
  hidden = pixel_mask.reshape(grid, p, grid, p).mean(axis=(1, 3)) >= 0.5
  model_mask = np.repeat(np.repeat(hidden, p, axis=0), p, axis=1)
  if (pixel_mask & ~model_mask).any():
    image = np.array(
      metrics.interpolation_fill(
        image[None], pixel_mask[None], metrics.interpolation_sigma(resolution, grid)
      )[0]
    )
  image[model_mask] = 0.0
  return image, model_mask


def tile_starts(size: int, tile: int) -> list[int]:
  """Start offsets of windows of `tile` pixels covering `size` with about half-window overlap."""
  if size <= tile:
    return [0]
  count = -(-(size - tile) // max(tile // 2, 1)) + 1
  return sorted({int(round(v)) for v in np.linspace(0, size - tile, count)})


def _tent(n: int) -> np.ndarray:
  """[n] blending weights, highest in the middle, > 0 at the edges."""
  centre = (np.arange(n) + 0.5) / n
  return np.minimum(centre, 1 - centre) + 0.5 / n


# ---------------------------------------------------------------- inpaint ---


@dataclasses.dataclass
class InpaintResult:
  """One photo's fill. Arrays float32 in [0, 1] at the photo's size [H, W, ...].

  filled: the input's channels (C as given), visible pixels unchanged;
  photo: the input as RGB [H, W, 3] (the ground truth); minr,
  interpolation, mean_fill: RGB [H, W, 3] fills (visible pixels the
  photo's); mask: bool [H, W]; model_mask: bool [R, R], the patch mask the
  model saw (resize); psnr: hidden-region PSNR in dB of each fill against
  the input; baselines: the other classical fills by name (telea, navier_stokes,
  biharmonic); ssim, lpips: SSIM (higher is better) and LPIPS (lower is better; absent
  under 31 px a side) of each fill over the whole photo, keyed as psnr.
  """

  filled: np.ndarray
  photo: np.ndarray
  minr: np.ndarray
  interpolation: np.ndarray | None
  mean_fill: np.ndarray | None
  mask: np.ndarray
  model_mask: np.ndarray
  psnr: dict[str, float]
  baselines: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  ssim: dict[str, float] = dataclasses.field(default_factory=dict)
  lpips: dict[str, float] = dataclasses.field(default_factory=dict)


def photo_interpolation_sigma(model_config, height: int, width: int) -> tuple[float, float]:
  """(rows, columns) Gaussian width in photo pixels: the run's interpolation sigma
  (a quarter of a mask-grid cell) measured on the photo's own grid."""
  g = int(model_config.mask_grid)
  return height / (4.0 * g), width / (4.0 * g)


def hidden_psnr(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
  """PSNR (dB, peak 1) over the hidden pixels [H, W] of pred vs truth [H, W, C]."""
  mse = metrics.masked_mse(pred[None], truth[None], mask[None])
  return float(metrics.psnr_from_mse(mse)[0])


def baselines(rgb: np.ndarray, mask: np.ndarray, sigma) -> tuple[np.ndarray, np.ndarray]:
  """(interpolation, mean-colour fill) of rgb [H, W, 3] under mask [H, W], at full size."""
  interp = metrics.interpolation_fill_multiscale(rgb[None], mask[None], sigma)
  fill = metrics.mean_colour_fill(rgb[None], mask[None])
  return np.asarray(interp[0], np.float32), np.asarray(fill[0], np.float32)


# The classical inpainters beside interpolation and mean fill, at the photo's own size.
OTHER_BASELINES = ("telea", "navier_stokes", "biharmonic")


def similarities(fills: dict[str, np.ndarray], truth: np.ndarray) -> tuple[dict, dict]:
  """({name: SSIM}, {name: LPIPS}) of each fill [H, W, 3] against truth over the whole
  photo; LPIPS only when both sides have at least `similarity.lpips_min_size()` pixels."""
  names = list(fills)
  stack = np.stack([fills[n] for n in names]).astype(np.float32)
  truth = np.broadcast_to(truth.astype(np.float32), stack.shape)
  ssim = dict(zip(names, np.asarray(similarity.ssim(stack, truth)).tolist()))
  lpips = {}
  if min(truth.shape[1:3]) >= similarity.lpips_min_size():
    lpips = dict(zip(names, np.asarray(similarity.lpips(stack, truth)).tolist()))
  return ssim, lpips


def _predict(model, jobs: list[tuple[np.ndarray, np.ndarray, int, int]]) -> list[np.ndarray]:
  """[(model image [R, R, 3], model mask [R, R], out_h, out_w)] -> [pred [out_h, out_w, 3]]."""
  images = np.stack([x for x, *_ in jobs])
  masks = np.stack([m for _, m, *_ in jobs])
  return model.render_each(images, masks, [(h, w) for *_, h, w in jobs])


def inpaint_many(
  model,
  images: list,
  masks: list,
  *,
  tile: int = 0,
  with_baselines: bool = True,
  names: list[str] | None = None,
) -> list[InpaintResult]:
  """Inpaints photos of any sizes (each [H, W] or [H, W, C]) under masks bool [H, W].

  The model calls are batched over all photos (and tiles). ConfigError for a
  mask of the wrong size, or one hiding nothing or everything.
  """
  if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0:
    raise ConfigError(f"tile must be a non-negative integer (0: resize), got {tile!r}")
  if len(images) != len(masks):
    raise ConfigError(f"{len(images)} images but {len(masks)} masks")
  names = names or [f"image {i}" for i in range(len(images))]
  grid = int(model.config.mask_grid)
  parts, jobs, tiles = [], [], []
  for i, (image, mask) in enumerate(zip(images, masks)):
    rgb, colour, alpha, c = _split_channels(image)
    h, w = rgb.shape[:2]
    mask = check_mask(mask, h, w, names[i])
    parts.append((rgb, colour, alpha, c, mask, len(jobs)))
    jobs.append((*to_model_grid(rgb, mask, model.resolution, grid), h, w))
    if tile:
      for y in tile_starts(h, tile):
        for x in tile_starts(w, tile):
          th, tw = min(tile, h), min(tile, w)
          sub = mask[y : y + th, x : x + tw]
          if not sub.any():
            continue
          x_tile, seen = to_model_grid(rgb[y : y + th, x : x + tw], sub, model.resolution, grid)
          if seen.all():
            continue
          tiles.append((i, y, x, len(jobs)))
          jobs.append((x_tile, seen, th, tw))
  preds = _predict(model, jobs)
  results = []
  for i, (rgb, colour, alpha, c, mask, job) in enumerate(parts):
    pred = preds[job]
    if tile:
      total = np.zeros_like(pred)
      weight = np.zeros(pred.shape[:2] + (1,), np.float32)
      for k, y, x, tile_job in tiles:
        if k != i:
          continue
        p = preds[tile_job]
        th, tw = p.shape[:2]
        win = (_tent(th)[:, None] * _tent(tw)[None, :])[..., None]
        total[y : y + th, x : x + tw] += win * p
        weight[y : y + th, x : x + tw] += win
      pred = np.where(weight > 0, total / np.maximum(weight, 1e-12), pred)
    pred = np.clip(pred, 0.0, 1.0)
    if colour.shape[-1] == 1:  # greyscale: the prediction's luma (ITU-R 601, as PIL)
      pred = np.repeat(
        (pred @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=-1
      )
    hidden = mask[..., None]
    minr = np.where(hidden, pred, rgb)
    filled = np.where(hidden, pred[..., : colour.shape[-1]], colour)
    if alpha is not None:
      filled = np.concatenate([filled, alpha], axis=-1)
    if c == 1 and np.asarray(images[i]).ndim == 2:
      filled = filled[..., 0]
    interp = mean = None
    others: dict[str, np.ndarray] = {}
    psnr = {"minr": hidden_psnr(minr, rgb, mask)}
    ssim, lpips = {}, {}
    if with_baselines:
      interp, mean = baselines(rgb, mask, photo_interpolation_sigma(model.config, *rgb.shape[:2]))
      psnr["interpolation"] = hidden_psnr(interp, rgb, mask)
      psnr["mean_fill"] = hidden_psnr(mean, rgb, mask)
      for name in OTHER_BASELINES:
        others[name] = classical.INPAINTERS[name](rgb[None], mask[None])[0]
        psnr[name] = hidden_psnr(others[name], rgb, mask)
      fills = {"minr": minr, "interpolation": interp, "mean_fill": mean, **others}
      ssim, lpips = similarities(fills, rgb)
    results.append(
      InpaintResult(
        filled=filled.astype(np.float32),
        photo=rgb,
        minr=minr,
        interpolation=interp,
        mean_fill=mean,
        mask=mask,
        model_mask=jobs[job][1],
        psnr=psnr,
        baselines=others,
        ssim=ssim,
        lpips=lpips,
      )
    )
  return results


def inpaint(
  model, image, mask, *, tile: int = 0, index: int = 0, with_baselines: bool = True
) -> InpaintResult:
  """One photo [H, W] or [H, W, C] (uint8, or float in [0, 1]) and a mask: bool [H, W]
  (True = hidden) or a --mask string (box, strategy with seed `index`, PNG path)."""
  if isinstance(mask, str):
    rgb = _split_channels(image)[0]
    mask = photo_mask(
      parse_mask(mask), rgb.shape[0], rgb.shape[1], index, int(model.config.mask_grid)
    )
  return inpaint_many(model, [image], [mask], tile=tile, with_baselines=with_baselines)[0]


# ----------------------------------------------------------------- output ---


def _png(array: np.ndarray) -> bytes:
  x = np.round(np.clip(np.asarray(array, np.float32), 0, 1) * 255).astype(np.uint8)
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, format="PNG")
  return buf.getvalue()


def save_result(result: InpaintResult, output: str, name: str) -> tuple[str, str]:
  """Writes OUTPUT/<name>_filled.png and <name>_compare.png; returns their paths."""
  stem = os.path.splitext(name)[0]
  filled_path = f"{output.rstrip('/')}/{stem}_filled.png"
  compare_path = f"{output.rstrip('/')}/{stem}_compare.png"
  paths.write_bytes(filled_path, _png(result.filled))
  masked = np.where(result.mask[..., None], 0.0, result.photo)
  columns = [masked]
  titles = ["masked"]
  if result.interpolation is not None:
    columns.append(result.interpolation)
    titles.append(f"interp. {result.psnr['interpolation']:.1f} dB")
  for name in ("telea", "biharmonic"):
    if name in result.baselines:
      columns.append(result.baselines[name])
      titles.append(f"{classical.LABELS[name].split(' (')[0]} {result.psnr[name]:.1f} dB")
  columns.append(result.minr)
  titles.append(f"MINR {result.psnr['minr']:.1f} dB")
  columns.append(result.photo)
  titles.append("ground truth")
  writers.save_image_grid(compare_path, [c[None] for c in columns], titles)
  return filled_path, compare_path
