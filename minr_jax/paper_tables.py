"""`minr-paper-tables` / `python -m minr_jax.paper_tables`.

`evaluation.paper_tables`: the paper's tables from evaluate's results.
"""

from __future__ import annotations

from absl import flags

from minr_jax import cli
from minr_jax.evaluation import paper_tables


def main() -> None:
  runs = {
    key: flags.DEFINE_string(key, None, f"Workdir of the run trained on {key}.")
    for key in paper_tables.DATASET_LABELS
  }
  model = flags.DEFINE_enum(
    "model", "minr-transinr", list(paper_tables.PAPER), "Whose paper numbers to show."
  )
  output = flags.DEFINE_string("output", None, "Also write the tables to this Markdown file.")

  def _main(args: list[str]) -> None:
    del args
    text = paper_tables.tables(
      {key: paper_tables.latest_results(flag.value) for key, flag in runs.items() if flag.value},
      model.value,
    )
    print(text)
    if output.value:
      with open(output.value, "w") as f:
        f.write(text)

  cli.run(_main)


if __name__ == "__main__":
  main()
