"""The run configs: `get_config(arg)` per file (python -m minr_jax.main --config=configs/X.py:ARG)."""
