"""SSIM against scikit-image; LPIPS identity, symmetry, blur order, batching and jit."""

import jax
import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from skimage.metrics import structural_similarity

from minr_jax import similarity


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.array(
    [
      structural_similarity(
        x.astype(np.float64),
        y.astype(np.float64),
        data_range=1,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
      )
      for x, y in zip(a, b)
    ]
  )


def _photo(size: int, top: int = 60, left: int = 180) -> np.ndarray:
  """[size, size, 3] float32 crop of scikit-image's astronaut photograph."""
  return data.astronaut()[top : top + size, left : left + size].astype(np.float32) / 255.0


@pytest.mark.parametrize("size", [16, 64])
def test_ssim_equals_skimage(size):
  rng = np.random.default_rng(size)
  a = rng.random((4, size, size, 3), dtype=np.float32)
  a[2] = _photo(size)
  a[3] = _photo(size, top=300, left=100)
  b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
  b[1] = 0.5  # a flat image
  b[3] = ndimage.gaussian_filter(a[3], (1.0, 1.0, 0))
  ours = np.asarray(jax.jit(similarity.ssim)(a, b))
  assert ours.shape == (4,) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, _skimage_ssim(a, b), atol=1e-4)
  np.testing.assert_allclose(np.asarray(similarity.ssim(a, a)), 1.0, atol=1e-5)


def test_ssim_rejects_images_smaller_than_the_window():
  with pytest.raises(ValueError, match="at least 11"):
    similarity.ssim(np.zeros((1, 10, 10, 3)), np.zeros((1, 10, 10, 3)))


def test_lpips_identity_symmetry_order_batching_jit():
  size = 32
  sharp = np.stack([_photo(size), _photo(size, top=300, left=100)])
  weak = ndimage.gaussian_filter(sharp, (0, 0.7, 0.7, 0))
  strong = ndimage.gaussian_filter(sharp, (0, 2.0, 2.0, 0))

  d_same = np.asarray(similarity.lpips(sharp, sharp))
  assert d_same.shape == (2,) and d_same.dtype == np.float32
  np.testing.assert_allclose(d_same, 0.0, atol=1e-6)

  d_weak = np.asarray(similarity.lpips(sharp, weak))
  d_strong = np.asarray(similarity.lpips(sharp, strong))
  np.testing.assert_allclose(np.asarray(similarity.lpips(strong, sharp)), d_strong, rtol=1e-5)
  assert np.all(d_weak > 1e-3) and np.all(d_strong > d_weak), (d_weak, d_strong)

  one_by_one = [float(similarity.lpips(sharp[i : i + 1], strong[i : i + 1])[0]) for i in range(2)]
  np.testing.assert_allclose(d_strong, one_by_one, rtol=1e-5, atol=1e-7)

  jitted = jax.jit(lambda a, b: similarity.lpips(a, b))
  np.testing.assert_allclose(np.asarray(jitted(sharp, strong)), d_strong, rtol=1e-5)


def test_lpips_spatial_map_and_size_limit():
  a = np.stack([_photo(32)])
  b = ndimage.gaussian_filter(a, (0, 1.5, 1.5, 0))
  dist_map = np.asarray(similarity.lpips(a, b, spatial=True))
  assert dist_map.shape == (1, 32, 32)
  np.testing.assert_allclose(dist_map.mean(), float(similarity.lpips(a, b)[0]), rtol=0.2)
  assert similarity.lpips_min_size("alex") == 31
  with pytest.raises(ValueError, match="at least 31 px"):
    similarity.lpips(np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 16, 3)))
  assert "lower is better" in similarity.LPIPS_LABEL
