r"""Times one training step of a PyTorch TransINR-MINR at the paper config on a CPU.

Measures the wall time of whole training steps (zero_grad, masking, forward, loss, backward,
Adam step) of TransINR-based MINR at the paper's configuration: 182 px images in batches of 16,
a 14x14 grid of 13 px mask patches hidden with probability 0.75, 400 data tokens (9x9 patches
of the 1 px zero-padded image) and 259 weight tokens through a 6-block, 768-wide transformer,
which modulates a 5-layer, 256-wide Fourier-feature INR rendered at all 33,124 pixels
(44,462,851 parameters). It is our own PyTorch rendering of the reference architecture, written
from its description so that the JAX step time (`python -m minr_jax.bench`) can be compared
with PyTorch measured on the same machine in the same session; it is not the official code.

torch is not a project dependency; run this script from its own virtual environment:

  python -m venv ~/torchvenv && ~/torchvenv/bin/pip install 'torch==2.13.*' numpy
  ~/torchvenv/bin/python benchmarks/torch_reference_step.py --steps=3 --warmup=1

Prints one JSON object on its last line: train_step_s (median, min, max, all), images_per_s,
num_parameters, torch_version, num_threads, batch_size, resolution, the machine and load average.
Images are random (fixed seed); masks are drawn afresh per image per step, as in training.

Other resolutions (for quick checks only) derive the grids from the resolution: the mask grid
stays 14x14 with patches of ceil(resolution / 14) px (cropped to the image) and the tokens are
the floor((resolution + 2) / 9)^2 whole 9x9 patches of the padded image. --width, --depth and
--heads shrink the transformer for such checks; the parameter count is asserted only for the
paper config (182 px, width 768, depth 6, 12 heads).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

PAPER_NUM_PARAMETERS = 44_462_851
MASK_GRID = 14  # mask patches per side
MASK_RATIO = 0.75  # probability that a mask patch is hidden
TOKEN_PATCH = 9  # tokenizer patch size, after padding the image by TOKEN_PAD on each side
TOKEN_PAD = 1
INR_DIMS = (256, 256, 256, 256, 256, 3)  # Fourier features in, then 5 linear layers
NUM_FREQS = 64
MAX_FREQ = 1024.0
MAX_GROUPS = 64  # weight tokens per INR layer: min(MAX_GROUPS, fan_out)


class Attention(nn.Module):
  """Multi-head self-attention: q, k, v without bias, output projection with bias."""

  def __init__(self, width: int, heads: int, sdpa: bool):
    super().__init__()
    self.heads = heads
    self.sdpa = sdpa
    self.q = nn.Linear(width, width, bias=False)
    self.k = nn.Linear(width, width, bias=False)
    self.v = nn.Linear(width, width, bias=False)
    self.proj = nn.Linear(width, width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, t, d = x.shape
    split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
    q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
    if self.sdpa:
      out = F.scaled_dot_product_attention(q, k, v)
    else:
      logits = torch.matmul(q, k.transpose(-2, -1)) * (d // self.heads) ** -0.5
      out = torch.matmul(logits.softmax(dim=-1), v)
    return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
  """Pre-LayerNorm transformer block with an exact-GELU MLP."""

  def __init__(self, width: int, heads: int, sdpa: bool):
    super().__init__()
    self.ln1 = nn.LayerNorm(width, eps=1e-5)
    self.attn = Attention(width, heads, sdpa)
    self.ln2 = nn.LayerNorm(width, eps=1e-5)
    self.mlp = nn.Sequential(
      nn.Linear(width, 4 * width), nn.GELU(approximate="none"), nn.Linear(4 * width, width)
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.ln1(x))
    return x + self.mlp(self.ln2(x))


def fourier_features(resolution: int) -> torch.Tensor:
  """[resolution^2, 256] features of the pixel centres: all cosines (row, col), then all sines."""
  centres = -1 + 2 * (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
  rows, cols = torch.meshgrid(centres, centres, indexing="ij")
  coords = torch.stack([rows, cols], dim=-1).reshape(-1, 2)  # (row, col) per pixel
  freqs = torch.exp(torch.linspace(0.0, math.log(MAX_FREQ), NUM_FREQS))
  angles = (math.pi * coords[:, :, None] * freqs).reshape(coords.shape[0], 2 * NUM_FREQS)
  return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TransINR(nn.Module):
  """Masked image -> transformer -> per-image modulated INR weights -> rendered image."""

  def __init__(self, resolution: int, width: int, depth: int, heads: int, sdpa: bool):
    super().__init__()
    self.resolution = resolution
    grid = (resolution + 2 * TOKEN_PAD) // TOKEN_PATCH
    self.num_data_tokens = grid * grid
    self.patch_embed = nn.Linear(3 * TOKEN_PATCH * TOKEN_PATCH, width)
    self.pos_embed = nn.Parameter(torch.randn(self.num_data_tokens, width))
    self.layer_shapes = list(zip(INR_DIMS[:-1], INR_DIMS[1:]))  # (fan_in, fan_out)
    self.groups = [min(MAX_GROUPS, fan_out) for _, fan_out in self.layer_shapes]
    self.weight_tokens = nn.Parameter(torch.randn(sum(self.groups), width))
    self.blocks = nn.ModuleList([Block(width, heads, sdpa) for _ in range(depth)])
    self.heads = nn.ModuleList(
      [
        nn.Sequential(nn.LayerNorm(width, eps=1e-5), nn.Linear(width, fan_in))
        for fan_in, _ in self.layer_shapes
      ]
    )
    self.bases = nn.ParameterList()
    for fan_in, fan_out in self.layer_shapes:
      bound = 1 / math.sqrt(fan_in)
      self.bases.append(nn.Parameter(torch.empty(fan_in + 1, fan_out).uniform_(-bound, bound)))
    self.register_buffer("features", fourier_features(resolution), persistent=False)

  def inr_weights(self, masked: torch.Tensor) -> list[torch.Tensor]:
    """[B, 3, H, W] masked images -> per-layer [B, fan_in + 1, fan_out] INR weights."""
    b = masked.shape[0]
    padded = F.pad(masked, (TOKEN_PAD,) * 4)
    patches = F.unfold(padded, kernel_size=TOKEN_PATCH, stride=TOKEN_PATCH).transpose(1, 2)
    x = self.patch_embed(patches) + self.pos_embed
    x = torch.cat([x, self.weight_tokens.expand(b, -1, -1)], dim=1)
    for block in self.blocks:
      x = block(x)
    weights, start = [], self.num_data_tokens
    for (fan_in, fan_out), g, head, base in zip(
      self.layer_shapes, self.groups, self.heads, self.bases
    ):
      mod = head(x[:, start : start + g]).transpose(1, 2)  # [B, fan_in, g]
      start += g
      mod = mod.repeat(1, 1, fan_out // g)  # output column j uses group j mod g
      w = mod * base[:fan_in]
      w = w / w.norm(dim=1, keepdim=True)
      weights.append(torch.cat([w, base[fan_in:].expand(b, 1, fan_out)], dim=1))
    return weights

  def forward(self, masked: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] masked images -> [B, H * W, 3] rendered pixels."""
    h = self.features
    weights = self.inr_weights(masked)
    for i, w in enumerate(weights):
      h = torch.matmul(h, w[:, :-1]) + w[:, -1:]
      if i < len(weights) - 1:
        h = torch.relu(h)
    return h + 0.5


def mask_images(images: torch.Tensor) -> torch.Tensor:
  """Zeroes each of the 14x14 mask patches of [B, 3, H, W] images with probability 0.75."""
  b, _, res, _ = images.shape
  patch = math.ceil(res / MASK_GRID)
  keep = (torch.rand(b, MASK_GRID, MASK_GRID) >= MASK_RATIO).to(images.dtype)
  keep = keep.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)[:, :res, :res]
  return images * keep[:, None]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3, help="Timed training steps.")
  parser.add_argument("--warmup", type=int, default=1, help="Untimed steps before timing.")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--resolution", type=int, default=182, help="Image side in pixels.")
  parser.add_argument(
    "--threads",
    type=int,
    default=None,
    help="torch.set_num_threads; default: leave torch's default.",
  )
  parser.add_argument("--width", type=int, default=768, help="Transformer width (checks only).")
  parser.add_argument("--depth", type=int, default=6, help="Transformer blocks (checks only).")
  parser.add_argument("--heads", type=int, default=12, help="Attention heads (checks only).")
  parser.add_argument(
    "--sdpa",
    action="store_true",
    help="Use F.scaled_dot_product_attention instead of matmul + softmax.",
  )
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  if args.threads is not None:
    torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  model = TransINR(args.resolution, args.width, args.depth, args.heads, args.sdpa)
  num_parameters = sum(p.numel() for p in model.parameters())
  print(f"parameters: {num_parameters:,}", flush=True)
  paper = (args.resolution, args.width, args.depth, args.heads) == (182, 768, 6, 12)
  if paper:
    assert num_parameters == PAPER_NUM_PARAMETERS, num_parameters
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  res = args.resolution
  images = torch.rand(args.batch_size, res, res, 3)  # [B, H, W, 3] in [0, 1]
  target = images.reshape(args.batch_size, res * res, 3)
  images_chw = images.permute(0, 3, 1, 2).contiguous()

  def step() -> float:
    optimizer.zero_grad(set_to_none=True)
    pred = model(mask_images(images_chw))
    loss = ((pred - target) ** 2).mean(dim=(1, 2)).mean()  # mean of per-image MSEs
    loss.backward()
    optimizer.step()
    return loss.item()

  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    loss = step()
    elapsed = time.perf_counter() - start
    timed = i >= args.warmup
    if timed:
      times.append(elapsed)
    print(
      f"step {i} ({'timed' if timed else 'warm-up'}): {elapsed:.3f} s, loss {loss:.5f}", flush=True
    )

  result = dict(
    train_step_s=dict(
      median=statistics.median(times) if times else None,
      min=min(times, default=None),
      max=max(times, default=None),
      all=times,
    ),
    images_per_s=args.batch_size / statistics.median(times) if times else None,
    num_parameters=num_parameters,
    paper_config=paper,
    torch_version=torch.__version__,
    num_threads=torch.get_num_threads(),
    batch_size=args.batch_size,
    resolution=res,
    width=args.width,
    depth=args.depth,
    heads=args.heads,
    attention="sdpa" if args.sdpa else "matmul_softmax",
    final_loss=loss if args.warmup + args.steps else None,
    cpu_count=os.cpu_count(),
    machine=platform.processor() or platform.machine(),
    load_average=[round(x, 2) for x in os.getloadavg()],
  )
  print(json.dumps(result))


if __name__ == "__main__":
  main()
