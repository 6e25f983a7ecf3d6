"""Paths a run reads or writes: a local path or a URL (gs://, s3://), via etils.epath.

`as_path` makes a local path absolute and leaves a URL as given; `write_bytes`/`write_text` are
atomic on both (docs/cloud.md).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile

from etils import epath

from minr_jax.errors import ConfigError

# URL schemes that etils.epath (through fsspec) and orbax's tensorstore both serve, with
# the package epath needs for each. gs:// is the tested one.
SCHEMES = {"gs": "gcsfs", "s3": "s3fs"}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
FILE_MODE = 0o644  # local files written here: readable by others, as open() gives


def scheme(path: str | os.PathLike) -> str | None:
  """'gs' for 'gs://b/x', None for a local path."""
  m = _URL.match(os.fspath(path))
  return m.group(1).lower() if m else None


def is_url(path: str | os.PathLike) -> bool:
  """True for 'scheme://...' (served or not), False for a local path."""
  return scheme(path) is not None


def check_scheme(path: str | os.PathLike, what: str = "path") -> None:
  """ConfigError naming `what` if `path` is a URL no installed file system serves."""
  s = scheme(path)
  if s is None:
    return
  if s not in SCHEMES:
    raise ConfigError(
      f"{what}={os.fspath(path)}: no file system serves {s}:// URLs "
      f"(use a local path, {' or '.join(f'{k}://' for k in SCHEMES)})"
    )
  package = SCHEMES[s]
  tf_serves = s == "gs" and importlib.util.find_spec("tensorflow") is not None
  if not tf_serves and importlib.util.find_spec(package) is None:
    raise ConfigError(
      f"{what}={os.fspath(path)}: {s}:// paths need the {package} package (pip install {package})"
    )


def as_path(path: str | os.PathLike, what: str = "path") -> epath.Path:
  """An epath.Path: a URL as given (its scheme checked), a local path made absolute."""
  text = os.fspath(path)
  if is_url(text):
    check_scheme(text, what)
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def abspath(path: str | os.PathLike) -> str:
  """`os.path.abspath(os.path.expanduser(path))` for a local path; a URL unchanged."""
  text = os.fspath(path)
  return text if is_url(text) else os.path.abspath(os.path.expanduser(text))


def bucket(path: str | os.PathLike) -> str:
  """'gs://bucket' of 'gs://bucket/a/b' (the URL's root)."""
  s, rest = os.fspath(path).split("://", 1)
  return f"{s}://{rest.split('/', 1)[0]}"


def check_reachable(path: str | os.PathLike, what: str = "path") -> None:
  """ConfigError naming `what` if a URL's bucket is missing or unreachable.

  Asks the store once for the bucket (or, without permission to read the
  bucket's metadata, for a listing of it). Nothing happens for a local path:
  creating its folder reports any problem as before.
  """
  if not is_url(path):
    return
  check_scheme(path, what)
  root = bucket(path)
  try:
    found = epath.Path(root).exists() or _listable(root)
  except Exception as e:  # noqa: BLE001 (each file system raises its own types)
    reason = " ".join(str(e).split())[:200] or type(e).__name__
    raise ConfigError(f"{what}={os.fspath(path)}: cannot reach {root}: {reason}") from None
  if not found:
    raise ConfigError(
      f"{what}={os.fspath(path)}: bucket {root} does not exist or these credentials cannot see it"
    )


def _listable(root: str) -> bool:
  """Whether a bucket lists (an empty bucket looks absent to credentials that may list
  and write objects but not read the bucket's metadata, e.g. roles/storage.objectAdmin)."""
  import fsspec  # noqa: PLC0415

  try:
    fs, key = fsspec.core.url_to_fs(root)
    fs.ls(key)
  except (FileNotFoundError, ImportError):
    return False
  return True


def makedirs(path: str | os.PathLike) -> None:
  """Creates a local folder and its parents (exist_ok); nothing to do in an object store."""
  as_path(path).mkdir(parents=True, exist_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` whole: one object upload, or a local temp file renamed over it.

  A local file gets mode 0644 and its parent folders are created.
  """
  target = as_path(path)
  if is_url(target):
    target.write_bytes(data)
    return
  parent = os.path.dirname(os.fspath(target))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp_", suffix=target.suffix)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, FILE_MODE)  # mkstemp makes it 0600
    os.replace(tmp, os.fspath(target))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  """`write_bytes` of UTF-8 text."""
  write_bytes(path, text.encode("utf-8"))


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Copies one file between any two places (local or URL), replacing dst whole."""
  with as_path(src).open("rb") as f:
    write_bytes(dst, f.read())


def url_files(root: str) -> dict[str, tuple[int, int]]:
  """{relative POSIX path: (size in bytes, mtime in ns)} of every object below a URL.

  One listing of the store (fsspec's `find`), not a request per file.
  ConfigError naming the package if no fsspec file system serves the scheme.
  """
  import fsspec  # noqa: PLC0415 (etils.epath's own dependency for URLs)

  try:
    fs, key = fsspec.core.url_to_fs(root)
  except (ImportError, ValueError) as e:
    raise ConfigError(f"{root}: {' '.join(str(e).split())}") from None
  key = key.rstrip("/")
  out = {}
  for name, info in fs.find(key, detail=True).items():
    if info.get("type", "file") != "file" or not name.startswith(key + "/"):
      continue
    mtime = info.get("mtime")
    mtime_ns = (
      int(mtime.timestamp() * 1e9) if hasattr(mtime, "timestamp") else int(float(mtime or 0) * 1e9)
    )
    out[name[len(key) + 1 :]] = (int(info.get("size") or 0), mtime_ns)
  return out


def files_under(root: str | os.PathLike) -> list[str]:
  """Relative POSIX paths of every file below `root` (local or URL), sorted."""
  text = os.fspath(root)
  if is_url(text):
    return sorted(url_files(text))
  top = abspath(text)
  found = []
  for current, _, files in os.walk(top):
    rel = os.path.relpath(current, top).replace(os.sep, "/")
    found += [name if rel == "." else f"{rel}/{name}" for name in files]
  return sorted(found)


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike, last: tuple[str, ...] = ()) -> int:
  """Copies every file below src to the same relative path below dst; returns the count.

  Files named in `last` (relative paths) are copied after all the others, so a
  reader that waits for them never sees a partial copy.
  """
  rels = list(files_under(src))
  rels = [r for r in rels if r not in last] + [r for r in rels if r in last]
  for rel in rels:
    copy_file(as_path(src) / rel, as_path(dst) / rel)
  return len(rels)


def cache_root() -> str:
  """Where local copies of remote data live: $XDG_CACHE_HOME (or ~/.cache)/minr_jax/mirror."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
  return os.path.join(os.path.abspath(os.path.expanduser(base)), "minr_jax", "mirror")


def writable(path: str | os.PathLike) -> bool:
  """Whether files can be made in a local folder (or its nearest existing parent):
  False on a read-only mount, even for root. A URL counts as writable (a store
  says otherwise only when written)."""
  text = os.fspath(path)
  if is_url(text):
    return True
  current = abspath(text)
  while not os.path.exists(current) and os.path.dirname(current) != current:
    current = os.path.dirname(current)
  return os.path.isdir(current) and os.access(current, os.W_OK | os.X_OK)


def results_dir(workdir: str, kind: str, step: int, output: str | None = None) -> str:
  """Where a read command writes its results for checkpoint `step` of `workdir`:
  `output` if given; else `<workdir>/<kind>/<step>`; else, when the workdir is
  read-only, `<cache>/minr_jax/results/<workdir's name>/<kind>/<step>`, said in one
  line."""
  if output:
    return abspath(output)
  default = os.path.join(abspath(workdir), kind, str(step))
  if writable(default):
    return default
  fallback = os.path.join(read_only_results(workdir, kind), str(step))
  print(
    f"note: {workdir} is read-only; writing the results to {fallback} (--output chooses where)",
    flush=True,
  )
  return fallback


def read_only_results(workdir: str, kind: str) -> str:
  """`<cache>/minr_jax/results/<workdir's name>/<kind>`: where `results_dir` puts the
  results of a read-only workdir."""
  name = os.path.basename(abspath(workdir).rstrip("/")) or "workdir"
  return os.path.join(os.path.dirname(cache_root()), "results", name, kind)


def local_mirror(url: str) -> str:
  """The local folder that mirrors a URL: <cache_root>/<scheme>/<bucket>/<path>.

  `remote_of` inverts it, so code handed only the local folder can find the URL.
  """
  s, rest = url.split("://", 1)
  parts = [p for p in rest.split("/") if p not in ("", ".")]
  if ".." in parts:
    raise ConfigError(f"{url}: '..' is not allowed in a URL")
  return os.path.join(cache_root(), s, *parts)


def remote_of(local: str | os.PathLike) -> str | None:
  """The URL a `local_mirror` folder (or a path inside one) mirrors; None otherwise."""
  text, root = os.path.abspath(os.fspath(local)), cache_root()
  if os.path.commonpath([text, root]) != root or text == root:
    return None
  s, *rest = os.path.relpath(text, root).split(os.sep)
  return f"{s}://{'/'.join(rest)}" if s in SCHEMES and rest else None
