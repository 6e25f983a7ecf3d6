"""Validation of a run's config: every clear, one-line error in one place.

`validate(config)` is called before anything is built or compiled. Each check
raises `ConfigError` with a message that names the offending config field (or
file path), so a bad command line fails in a second, not after a compile.
"""

from __future__ import annotations

import json
import math
import os

import ml_collections
from absl import logging

from minr_jax import masking, paths, similarity
from minr_jax.errors import ConfigError  # also importable from here, as it always was

# model.dtype / model.inr_dtype (`families.model_dtypes` maps them to jnp dtypes).
DTYPE_NAMES = ("float32", "bfloat16")
# model.attention_impl: 'auto' is resolved where a run starts (`device_policy.resolve_auto`).
ATTENTION_IMPLS = ("auto", "batched", "per_head")


def positive_int(config, field: str) -> int:
  """config.<field> (dotted); ConfigError naming it unless a positive int."""
  value = config
  for part in field.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f"config.{field} must be a positive integer, got {value!r}")
  return value


def non_negative_int(config, field: str) -> int:
  """config.<field> (dotted); ConfigError naming it unless an int >= 0."""
  value = config
  for part in field.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value < 0:
    raise ConfigError(f"config.{field} must be a non-negative integer, got {value!r}")
  return value


# Fields that must be True or False where present (on the command line: absl's
# rules, true/false/t/f/1/0 in any case; in Python: a bool, not 0 or 1).
BOOL_FIELDS = (
  "tensorboard",
  "model.qkv_bias",
  "model.exact_gelu",
  "model.remat",
  "model.norm_pix",
  "model.ginr_normalize_shared",
)


def validate(config, num_devices: int | None = None) -> None:
  """Raises ConfigError naming the first field that cannot work.

  Checks the fields every family shares; `families.check` adds the family's
  own checks, `minr_jax.data.check_dataset` the dataset's name and paths, and
  `minr_jax.checkpoint` a workdir's checkpoint.
  """
  for field in (
    "batch_size",
    "eval_batch_size",
    "num_train_steps",
    "resolution",
    "mask_grid",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "model.patch_size",
    "model.dim",
    "model.depth",
    "model.num_heads",
    "model.head_dim",
    "model.mlp_dim",
  ):
    positive_int(config, field)
  for field in ("keep_period", "num_grid_images", "seed", "eval_mask_seed"):
    if field in config:
      non_negative_int(config, field)
  for field in BOOL_FIELDS:
    parent, _, name = field.rpartition(".")
    holder = config[parent] if parent else config
    if name in holder and not isinstance(holder[name], bool):
      raise ConfigError(f"config.{field} must be true or false, got {holder[name]!r}")
  secs = config.get("checkpoint_every_secs", 0.0)
  if isinstance(secs, bool) or not (
    isinstance(secs, (int, float)) and math.isfinite(secs) and secs >= 0
  ):
    raise ConfigError(
      f"config.checkpoint_every_secs must be a finite number >= 0 (0 = off), got {secs!r}"
    )
  weight = config.get("lpips_weight", 0.0)
  if isinstance(weight, bool) or not (
    isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0
  ):
    raise ConfigError(
      f"config.lpips_weight must be a finite number >= 0 (0 = the paper's loss), got {weight!r}"
    )
  if weight and config.resolution < similarity.lpips_min_size():
    raise ConfigError(
      f"config.lpips_weight={weight} needs config.resolution >= "
      f"{similarity.lpips_min_size()} (LPIPS's AlexNet), got {config.resolution}"
    )
  init_from = config.get("init_from", "")
  if not isinstance(init_from, str):
    raise ConfigError(f"config.init_from must be a path (or ''), got {init_from!r}")
  local = init_from and not paths.is_url(init_from)
  if local and not os.path.exists(os.path.expanduser(init_from)):
    raise ConfigError(f"config.init_from={init_from}: no such workdir or checkpoint directory")
  if config.model.get("attention_impl", "auto") not in ATTENTION_IMPLS:
    raise ConfigError(
      f"config.model.attention_impl={config.model.attention_impl!r} is "
      f"not one of {', '.join(ATTENTION_IMPLS)}"
    )
  chunk = config.model.get("inr_chunk", -1)
  if not isinstance(chunk, int) or chunk < -1:
    raise ConfigError(
      f"config.model.inr_chunk must be -1 (auto), 0 (off) or a pixel count > 0, got {chunk!r}"
    )
  if not 0.0 <= config.mask_ratio < 1.0:
    raise ConfigError(f"config.mask_ratio must be in [0, 1), got {config.mask_ratio}")
  if config.resolution % config.mask_grid:
    raise ConfigError(
      f"config.resolution={config.resolution} is not divisible by "
      f"config.mask_grid={config.mask_grid}"
    )
  try:
    masking.mask_spec_from_config(config)
    for field in ("eval_mask_strategy",):
      if config[field] not in masking.STRATEGIES:
        raise ConfigError(
          f"config.{field}={config[field]!r} is not one of {', '.join(masking.STRATEGIES)}"
        )
  except ValueError as e:
    raise ConfigError(str(e)) from None
  lo, hi = config.mask.get("ratio_min"), config.mask.get("ratio_max")
  if (lo is None) != (hi is None):
    raise ConfigError("set both config.mask.ratio_min and config.mask.ratio_max, or neither")
  if lo is not None and not 0.0 <= lo <= hi < 1.0:
    raise ConfigError(f"config.mask.ratio_min={lo}, ratio_max={hi}: need 0 <= min <= max < 1")
  lr = config.learning_rate
  if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
    raise ConfigError(f"config.learning_rate must be a finite number > 0, got {lr}")
  factor = config.get("lr_decay_factor", 1.0)
  if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
    raise ConfigError(f"config.lr_decay_factor must be a finite number > 0, got {factor}")
  if num_devices is not None:
    for field in ("batch_size", "eval_batch_size"):
      if config[field] % num_devices:
        raise ConfigError(
          f"config.{field}={config[field]} is not divisible by the "
          f"{num_devices} devices of the mesh's data axis"
        )


# Fields added after the first releases, with the values that reproduce what
# runs saved without them did. `complete_saved` fills them into an older
# config.json so that its checkpoints still evaluate, embed and compare.
_ADDED_FIELDS = {
  "eval_datasets": "",
  "eval_train_dataset": True,
  "profile": "",
  "eval_mask_strategy": "random",
  "warmup_steps": 0,
  "fsdp_min_size": 2**18,
  "checkpoint_every_secs": 0.0,
  "keep_period": 0,
  "lpips_weight": 0.0,
  "init_from": "",
  "compilation_cache_dir": "",
  "mesh": {"data": -1, "fsdp": 1},
  "mask": {
    "strategy": "random",
    "ratio_min": None,
    "ratio_max": None,
    "block_min_patches": 4,
    "block_aspect_min": 0.3,
    "filter": "lowpass",
    "cutoff_low": None,
    "cutoff_high": None,
  },
  "model": {"dtype": "float32", "inr_dtype": "", "remat": False},
}
# Added fields that change neither what a loaded model computes nor how it is
# evaluated (outputs, cadences, placement, training-only schedules): filled in
# silently. Matched as prefixes, like training/guard.py's RESUMABLE_CHANGES.
_QUIET_FIELDS = (
  "lpips_weight",
  "init_from",
  "eval_train_dataset",
  "eval_datasets",
  "evals",
  "profile",
  "checkpoint_every_secs",
  "keep_period",
  "compilation_cache_dir",
  "warmup_steps",
  "mesh.",
  "fsdp_min_size",
  "model.remat",
)
# Added fields that only some families have ("" in model.family = the legacy
# TransINR config.json, written before model.family existed).
_FAMILY_FIELDS = {"model.inr_dtype": ("transinr", "ginr", "")}


def complete_saved(config):
  """Adds to a saved config (a ConfigDict read from config.json) the fields it predates.

  Only the fields its model family has (MAE never had model.inr_dtype).
  Returns the names of the fields added (empty for a current config).
  """
  added = []
  model = config.get("model", None) or {}
  family = str(model.get("family", None) or "").lower()

  def fill(target, defaults, prefix):
    for name, value in defaults.items():
      if family not in _FAMILY_FIELDS.get(prefix + name, (family,)):
        continue
      if isinstance(value, dict):
        if name not in target:
          target[name] = {}
        fill(target[name], value, f"{prefix}{name}.")
      elif name not in target:
        target[name] = value
        added.append(prefix + name)

  with config.unlocked():
    fill(config, _ADDED_FIELDS, "")
  return added


# ------------------------------------------------------ the families' own ---
# Referenced by the family table (`families.FAMILIES[...].validate`) and run by
# `families.check` after `validate`.


def check_dtypes(config) -> tuple[str, str]:
  """(model.dtype, model.inr_dtype) names, checked; inr_dtype '' follows model.dtype."""
  m = config.model
  name = m.get("dtype", "float32") or "float32"
  inr_name = m.get("inr_dtype", "") or name
  for field, value in (("dtype", name), ("inr_dtype", inr_name)):
    if value not in DTYPE_NAMES:
      raise ConfigError(f"config.model.{field}={value!r} is not one of {', '.join(DTYPE_NAMES)}")
  return name, inr_name


def validate_minr(config: ml_collections.ConfigDict) -> None:
  """The TransINR / GINR fields: tokenizer, INR, groups, schedule."""
  for field in (
    "model.inr_hidden_dim",
    "model.inr_num_layers",
    "model.ff_num_freqs",
    "model.num_groups",
  ):
    positive_int(config, field)
  m = config.model
  if m.padding < 0:
    raise ConfigError(f"config.model.padding must be >= 0, got {m.padding}")
  if (config.resolution + 2 * m.padding) // m.patch_size < 1:
    raise ConfigError(
      f"config.model.patch_size={m.patch_size} is larger than the "
      f"padded image ({config.resolution} + 2 x {m.padding})"
    )
  widths = [m.inr_hidden_dim] * (m.inr_num_layers - 1) + [3]
  for layer, width in enumerate(widths):
    groups = min(m.num_groups, width)
    if width % groups:
      raise ConfigError(
        f"config.model.num_groups={m.num_groups} does not divide the "
        f"width {width} of INR layer {layer}"
      )
  if m.ff_sigma < 1.0:
    raise ConfigError(f"config.model.ff_sigma must be >= 1, got {m.ff_sigma}")
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(f"config.model.dropout must be in [0, 1), got {m.dropout}")
  noise = m.get("coord_noise", 0.0) or 0.0
  if not 0.0 <= noise <= 1.0:
    raise ConfigError(f"config.model.coord_noise must be in [0, 1] pixel spacings, got {noise}")
  if not 0.0 < config.lr_decay_at <= 1.0:
    raise ConfigError(f"config.lr_decay_at must be in (0, 1], got {config.lr_decay_at}")
  warmup = config.get("warmup_steps", 0)
  boundary = int(config.lr_decay_at * config.num_train_steps)
  if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= boundary:
    raise ConfigError(
      f"config.warmup_steps must be an integer in [0, lr_decay_at x "
      f"num_train_steps = {boundary}], got {warmup!r}"
    )
  check_dtypes(config)


def validate_mae(config: ml_collections.ConfigDict) -> None:
  """MAE keeps a static number of visible tokens: exact-count masks, one ratio."""
  for field, value in (
    ("mask.strategy", config.mask.strategy),
    ("eval_mask_strategy", config.eval_mask_strategy),
  ):
    if value == "random":
      raise ConfigError(
        f"config.{field}=random varies the hidden count per image; MAE "
        "needs an exact-count strategy (e.g. random_exact)"
      )
  if config.mask.get("ratio_min") is not None:
    raise ConfigError(
      "config.mask.ratio_min/ratio_max must be unset for MAE (a static number of visible patches)"
    )
  size, patch, grid = config.resolution, config.model.patch_size, config.mask_grid
  if size % patch or size // patch != grid:
    raise ConfigError(
      f"config.model.patch_size={patch} gives a {size / patch:g}-patch grid "
      f"at {size} px; MAE's patch grid must equal config.mask_grid={grid} "
      f"(e.g. patch {size // grid} when {size} is a multiple of {grid})"
    )
  hidden = masking.exact_count(config.mask_ratio, grid * grid)
  if hidden >= grid * grid:
    raise ConfigError(
      f"config.mask_ratio={config.mask_ratio} leaves no visible patch of {grid * grid}"
    )
  if config.get("optimizer", "adamw") != "adamw":
    raise ConfigError(f"config.optimizer={config.optimizer!r}: MAE trains with 'adamw'")
  if config.get("lpips_weight", 0.0):
    raise ConfigError(
      f"config.lpips_weight={config.lpips_weight}: the perceptual term is MINR's option "
      "(TransINR, GINR); MAE trains on its hidden patches' MSE only"
    )
  if config.get("lr_schedule", "warmup_cosine") != "warmup_cosine":
    raise ConfigError(f"config.lr_schedule={config.lr_schedule!r}: only 'warmup_cosine'")
  if not 0 <= int(config.warmup_steps) <= int(config.num_train_steps):
    raise ConfigError(
      f"config.warmup_steps={config.warmup_steps} must be in [0, "
      f"config.num_train_steps={config.num_train_steps}]"
    )
  check_dtypes(config)


def load_saved(workdir: str):
  """A run's config.json as a ConfigDict, completed by `complete_saved`.

  workdir: a local path or a URL (gs://...). ConfigError if the file is
  missing or not JSON, or the URL's bucket is unreachable. Used by every
  command that reads a workdir (evaluate, load, robustness, compare).
  """
  path = os.path.join(os.fspath(workdir), "config.json")
  target = paths.as_path(path, "workdir")
  paths.check_reachable(path, "workdir")
  if not target.exists():
    raise ConfigError(f"{path} does not exist: is {workdir} a minr_jax workdir?")
  try:
    config = ml_collections.ConfigDict(json.loads(target.read_text()))
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path} is not valid JSON: {e}") from None
  added = [f for f in complete_saved(config) if not f.startswith(_QUIET_FIELDS)]
  if added:
    logging.warning("%s predates config fields %s; using their defaults", path, ", ".join(added))
  return config


def load_file(spec: str) -> ml_collections.ConfigDict:
  """'configs/mae.py:large,demo' -> that file's get_config('large,demo'), loaded by path.

  What `--config=` gives the commands, for scripts and notebooks: no sys.path
  edits, no `configs` package needed. ConfigError if the file does not exist.
  """
  import importlib.util  # noqa: PLC0415

  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist")
  name = "minr_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
