"""minr_jax: Masked Implicit Neural Representations (MINR) in JAX and Flax."""

__version__ = "0.1.0"


def __getattr__(name: str):
  # `minr_jax.load` imports JAX, Flax and orbax only when first used, so
  # `import minr_jax` stays light.
  if name in ("load", "Model"):
    from minr_jax.inference import model

    return getattr(model, name)
  raise AttributeError(f"module 'minr_jax' has no attribute {name!r}")
