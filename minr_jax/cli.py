"""What every command shares: `run(body)` parses flags and turns bad input into one line.

A command defines its flags inside `main()` and ends with `cli.run(lambda args: ...)`; any
ConfigError becomes `error: <message>` with exit status 1, before anything compiles.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable

from absl import app, flags, logging

from minr_jax.config import ConfigError


def exclusive(name: str, low: float | None = None, high: float | None = None) -> None:
  """Refuses --name <= low and >= high at parse time (absl's lower_bound and
  upper_bound include the bound): `error: flag --name=V: must be > low` (None, an
  unset default, passes). Give the flag lower_bound= too: the flags test reads it."""
  parts = [f"{op} {v:g}" for op, v in ((">", low), ("<", high)) if v is not None]
  flags.register_validator(
    name,
    lambda v: v is None or ((low is None or v > low) and (high is None or v < high)),
    message="must be " + " and ".join(parts),
  )


def define_step() -> None:
  """--step: which checkpoint of a workdir a command reads."""
  flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).", lower_bound=0)


def define_eval_max_images() -> None:
  """--max_images of the evaluation commands: the meaning of config.dataset.eval_max_images."""
  flags.DEFINE_integer(
    "max_images",
    None,
    "Evaluate at most this many images per dataset; 0 = all, as "
    "config.dataset.eval_max_images (default: the run's).",
    lower_bound=0,
  )


def flag_error(error: Exception, argv: list[str]) -> str:
  """One line naming the flag behind an error raised while parsing the command line.

  Flag and config-file errors (a missing config file, an unknown variant, an
  unknown `--config.X` field) come as multi-line text or a bare AttributeError;
  this keeps the line that says what is wrong and names the flag.
  """
  text = str(error).strip().strip('"').strip()
  missing = list(dict.fromkeys(re.findall(r"Flag (--\w+) must have a value other than None", text)))
  if missing:  # required flags left out, one or several
    return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required"
  if isinstance(error, AttributeError | KeyError):
    field = text.strip("'\"")
    for arg in argv:
      m = re.match(r"--(config(?:\.\w+)*)\.(\w+)=", arg)
      if m and m.group(2) == field:
        return f"--{m.group(1)}.{field}: the config has no field {field!r}"
    return f"unknown config field {field!r}"
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  head = lines[0] if lines else type(error).__name__
  flag = re.match(r"(flag )?(--\w+)", head)
  detail = next(
    (
      l
      for l in reversed(lines[1:])
      if not l.startswith("Pass --help") and not l.startswith("Attempted")
    ),
    "",
  )
  name = flag.group(2) if flag else ""
  detail = re.sub(r"^\w+Error: ", "", detail)
  return f"{name}: {detail}" if name and detail else head


def config_file_error(error: Exception, argv: list[str]) -> str | None:
  """One line for an error raised by executing a config file (a syntax error, a
  failed import, any exception while it loads), naming its flag and the file;
  None if no config-file flag in argv names the file the error came from."""
  given = {}  # flag name -> file
  for i, arg in enumerate(argv):
    m = re.match(r"--(\w+)(?:=(.*))?$", arg)
    if not m or m.group(1) not in flags.FLAGS:
      continue
    if type(flags.FLAGS[m.group(1)]).__name__ != "_ConfigFlag":
      continue
    value = m.group(2) if m.group(2) is not None else (argv[i + 1] if i + 1 < len(argv) else "")
    given[m.group(1)] = value.split(":", 1)[0]
  if not given:
    return None
  lines = {os.path.abspath(f.filename): f.lineno for f in traceback.extract_tb(error.__traceback__)}
  if isinstance(error, SyntaxError) and error.filename:
    lines[os.path.abspath(error.filename)] = error.lineno
  for name, path in given.items():
    line = lines.get(os.path.abspath(path))
    if line is not None or len(given) == 1:
      reason = (
        error.msg
        if isinstance(error, SyntaxError)
        else f"{type(error).__name__}: {' '.join(str(error).split())}"
      )
      where = f" (line {line})" if line else ""
      return f"--{name}: {path} does not load: {reason}{where}"
  return None


def _names_override(error: Exception, argv: list[str]) -> bool:
  """True for the AttributeError / KeyError of a `--config...FIELD=` override
  naming a field the loaded config does not have."""
  if not isinstance(error, AttributeError | KeyError):
    return False
  field = str(error).strip().strip("'\"")
  return any(
    (m := re.match(r"--config(?:\.\w+)*\.(\w+)=", arg)) and m.group(1) == field for arg in argv
  )


def _parse(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {flag_error(e, argv)}")
  except Exception as e:  # noqa: BLE001 (raised by a config file while it loads)
    if _names_override(e, argv):  # --config.X=... for a field the config lacks
      sys.exit(f"error: {flag_error(e, argv)}")
    sys.exit(f"error: {config_file_error(e, argv) or flag_error(e, argv)}")
  for name in flags.FLAGS:  # a config file that failed to load fails on first use
    value = flags.FLAGS[name].value
    if type(value).__name__ == "_ErrorConfig":
      try:
        value["seed"]
      except Exception as e:  # noqa: BLE001
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        sys.exit(f"error: --{name}: {lines[-1] if lines else e}")
  return rest


def run(body: Callable[[list[str]], object], *, positional: bool = False) -> None:
  """Runs body(positional arguments) as an absl app; bad input becomes one line."""

  def main(argv: list[str]) -> None:
    if not positional and len(argv) > 1:
      stray = " ".join(repr(a) for a in argv[1:])
      sys.exit(
        f"error: unexpected argument{'s' * (len(argv) > 2)} {stray}: this command "
        "takes flags only, as --name=value (see --help)"
      )
    logging.set_verbosity(logging.WARNING)
    try:
      body(argv[1:])
    except ConfigError as e:
      sys.exit(f"error: {e}")

  _show_in_help(sys._getframe(1).f_globals.get("__name__", ""))
  app.run(main, flags_parser=_parse)


def _show_in_help(command: str) -> None:
  """Makes `--help` list the command's flags, also those `define_*` above defined for it
  and those of a console script (absl's --help lists the key flags of sys.argv[0] only)."""
  for module in (command, __name__):
    for flag in flags.FLAGS.get_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
