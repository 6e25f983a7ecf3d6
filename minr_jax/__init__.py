"""minr_jax: Masked Implicit Neural Representations (MINR) in JAX and Flax."""

__version__ = "0.1.0"
