"""The run configs: `get_config(arg)` per file.

Used as `python -m minr_jax.main --config=configs/X.py:ARG`.
"""
