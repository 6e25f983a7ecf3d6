"""The TransINR hypernetwork: faithful structure, shapes, parameter counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import transinr as transinr_config
from minr_jax import families
from minr_jax.config import ConfigError
from minr_jax.families import check as validate
from minr_jax.models import transinr
from minr_jax.training import steps


def _abstract_params(config):
  model = families.get(config).build(config)
  return jax.eval_shape(functools.partial(families.get(config).init, model), jax.random.key(0))


def test_paper_config_has_the_reference_parameter_count():
  params = _abstract_params(transinr_config.get_config())
  assert families.count_params(params) == 44_462_851


def test_paper_config_structure():
  config = transinr_config.get_config()
  params = _abstract_params(config)
  assert params["pos_embed"].shape == (400, 768)  # 20 x 20 tokens from 182 + 2 px
  assert params["weight_tokens"].shape == (259, 768)  # 64 * 4 + 3
  assert params["patch_embed"]["kernel"].shape == (243, 768)
  assert [params[f"base_{i}"].shape for i in range(5)] == [(257, 256)] * 4 + [(257, 3)]
  block = params["transformer"]["block_0"]
  assert "bias" not in block["attn"]["query"] and "bias" in block["attn"]["out"]
  assert block["mlp"]["fc1"]["kernel"].shape == (768, 3072)
  assert len(params["transformer"]) == 6
  assert config.model.ln_epsilon == 1e-5 and config.model.exact_gelu


def test_summary_ends_with_total():
  text = steps.summary(transinr_config.get_config())
  assert text.splitlines()[-1] == "total parameters: 44,462,851"


def test_patchify_is_channel_major_like_torch_unfold():
  images = jnp.arange(2 * 7 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 7, 3)
  patches = np.asarray(transinr.patchify(images, patch_size=3, padding=1))
  assert patches.shape == (2, 9, 27)  # (7 + 2) // 3 = 3 per side
  padded = np.pad(np.asarray(images), ((0, 0), (1, 1), (1, 1), (0, 0)))
  # Token 5 = patch row 1, column 2; its values in (channel, row, col) order.
  want = padded[1, 3:6, 6:9, :].transpose(2, 0, 1).reshape(-1)
  np.testing.assert_array_equal(patches[1, 5], want)


def test_182_px_with_padding_1_drops_the_last_three_rows():
  assert transinr.num_patches_per_side(182, 9, 1) == 20
  a = jnp.zeros((1, 182, 182, 3))
  b = a.at[:, 179:, :, :].set(1.0).at[:, :, 179:, :].set(1.0)
  np.testing.assert_array_equal(transinr.patchify(a, 9, 1), transinr.patchify(b, 9, 1))


def test_tiny_model_outputs():
  config = transinr_config.get_config("tiny")
  model = families.get(config).build(config)
  images = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3))
  params = families.get(config).init(model, jax.random.key(1))
  out = jax.jit(model.apply)({"params": params}, images)  # compiled whole: eager is slow
  shapes = model.inr_shapes
  assert [w.shape for w in out["weights"]] == [(3, fi + 1, fo) for fi, fo in shapes]
  assert [m.shape for m in out["modulations"]] == [
    (3, fi, g) for (fi, _), g in zip(shapes, model.groups)
  ]
  assert out["data_tokens"].shape == (3, 16, 32)
  assert out["weight_tokens"].shape == (3, sum(model.groups), 32)
  # Columns of every modulated weight have unit norm; biases are the shared ones.
  for i, w in enumerate(out["weights"]):
    np.testing.assert_allclose(np.linalg.norm(np.asarray(w[:, :-1]), axis=1), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(w[0, -1]), np.asarray(params[f"base_{i}"][-1]))
  pred = jax.jit(functools.partial(families.reconstruct, model))(params, images)
  assert pred.shape == images.shape
  # Different images give different INRs.
  assert not np.allclose(np.asarray(pred[0]), np.asarray(pred[1]))


def test_dropout_only_in_training():
  config = transinr_config.get_config("tiny")
  config.model.dropout = 0.5
  model = families.get(config).build(config)
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  params = families.get(config).init(model, jax.random.key(1))
  evaluate = jax.jit(functools.partial(families.reconstruct, model))
  train_mode = jax.jit(functools.partial(families.reconstruct, model, train=True))
  a, b = evaluate(params, images), evaluate(params, images)
  c = train_mode(params, images, dropout_key=jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("mask_ratio", 1.0, "config.mask_ratio"),
    ("mask_ratio", -0.1, "config.mask_ratio"),
    ("resolution", 18, "not divisible by config.mask_grid"),
    ("model.num_groups", 3, "config.model.num_groups=3 does not divide"),
    ("batch_size", 0, "config.batch_size"),
    ("model.attention_impl", "flash", "config.model.attention_impl='flash'"),
    ("model.inr_chunk", -2, "config.model.inr_chunk must be"),
    ("warmup_steps", -1, "config.warmup_steps"),
    ("warmup_steps", 4, "config.warmup_steps"),  # past the decay at 80% of 4 steps
  ],
)
def test_bad_config_values_name_the_field(field, value, message):
  config = transinr_config.get_config("tiny")
  parent, _, name = field.rpartition(".")
  (config[parent] if parent else config)[name] = value
  with pytest.raises(ConfigError, match=message):
    validate(config)


def test_batch_must_divide_over_devices():
  config = transinr_config.get_config("tiny")
  config.batch_size = 6
  with pytest.raises(ConfigError, match="not divisible by the 4 devices"):
    validate(config, num_devices=4)


def test_learning_rate_schedule_is_the_papers_unless_warmup_is_set():
  config = transinr_config.get_config()
  assert config.warmup_steps == 0
  schedule = families.get(config).schedule(config)
  boundary = int(0.8 * config.num_train_steps)
  assert float(schedule(0)) == pytest.approx(1e-4)
  assert float(schedule(boundary - 1)) == pytest.approx(1e-4)
  assert float(schedule(boundary)) == pytest.approx(1e-5)
  config.warmup_steps = 10
  schedule = families.get(config).schedule(config)
  rates = [float(schedule(s)) for s in range(12)]
  assert rates[0] == pytest.approx(1e-5) and rates[4] == pytest.approx(5e-5)
  assert rates[9] == pytest.approx(1e-4) and rates[11] == pytest.approx(1e-4)
  assert float(schedule(boundary)) == pytest.approx(1e-5)


def test_demo_and_celeba64_variants():
  demo, faces = transinr_config.get_config("demo"), transinr_config.get_config("celeba64")
  for config in (demo, faces):
    validate(config)
    assert (config.resolution, config.mask_grid, config.mask_ratio) == (64, 8, 0.75)
    assert families.count_params(_abstract_params(config)) == 904_771
  assert demo.dataset.name == "cartoon_faces" and demo.warmup_steps == 50
  assert faces.dataset.name == "image_folder" and faces.dataset.path is None
