"""The command-line layer: each module parses one command's flags and calls the library.

Every command runs two ways, with the same flags and outputs:

  python -m minr_jax.embed --workdir=... ...     (the library module's name)
  minr-embed --workdir=... ...                    (console script, pyproject.toml)

A command module defines its flags inside `main()` (so importing it defines
none) and hands a body that calls library functions to `cli.run`, which turns
bad input into one `error:` line before anything compiles. The library
modules (`minr_jax.embed`, ...) hold no flags; their `__main__` block only
calls the command's `main()`. Tests call the library functions directly.

  train      minr_jax.main         train and evaluate a config (minr-train)
  eval       minr_jax.eval_only    declared evaluators on checkpoints (docs/evaluators.md)
  evaluate   minr_jax.evaluate     scores beside both baselines (an alias onto eval)
  robustness minr_jax.robustness   the mask strategy x ratio sweep (an alias onto eval)
  compare    minr_jax.compare      several checkpoints on one set of images (alias onto eval)
  paper_tables minr_jax.paper_tables  the paper's tables from evaluate's results
  embed      minr_jax.embed        embeddings of a dataset from a checkpoint
  probe      minr_jax.probe        a linear probe on saved embeddings
  inpaint    minr_jax.inpaint      fill a hole in your photos at their own size
  export     minr_jax.export       a small, params-only copy of a checkpoint
  bench      minr_jax.bench        step time, FLOPs and MFU of a config
  aot        minr_jax.aot          compile the steps for a TPU topology ahead of time
"""
