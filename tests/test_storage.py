"""Storage faults and odd inputs (issue 22): a full disk, a read-only workdir, empty or
half-written step folders, numbers that are not numbers. Each ends in one line or in
correct behaviour, and no fault loses a checkpoint that was intact before it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import make_image_folder, run_at_once, tiny_config

import minr_jax
from minr_jax import checkpoint, paths
from minr_jax import config as config_lib
from minr_jax.config import ConfigError
from minr_jax.evaluation import runner
from minr_jax.inference import export, probe
from minr_jax.inference import model as model_lib
from minr_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(workdir with checkpoints 2 and 4, config, folder, data_dir) of a 4-step tiny run."""
  root = tmp_path_factory.mktemp("storage")
  folder = make_image_folder(str(root / "images"))
  data_dir = str(root / "tfds")
  config = tiny_config(
    data_dir, folder, num_train_steps=4, checkpoint_every_steps=2, eval_every_steps=4
  )
  workdir = str(root / "run")
  loop.train_and_evaluate(config, workdir)
  return workdir, config, folder, data_dir


def _copy(trained, tmp_path, name="copy") -> str:
  target = str(tmp_path / name)
  shutil.copytree(trained[0], target)
  return target


def _state_files(workdir: str, step: int) -> list[str]:
  """The array data files of a step (tensorstore's OCDBT data, not its metadata)."""
  state = os.path.join(workdir, "checkpoints", str(step), "state")
  return [
    os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs if os.path.basename(d) == "d"
  ]


def _mount(*args: str) -> bool:
  return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def _mounted(target: str, *args: str):
  """`mount *args target` for the block; skips the test where mounting is not allowed."""
  if os.geteuid() != 0 or shutil.which("mount") is None:
    pytest.skip("mounting a test file system needs root (not available here)")
  os.makedirs(target, exist_ok=True)
  if not _mount(*args, target):
    pytest.skip(f"mount {' '.join(args)} is not permitted here")
  try:
    yield target
  finally:
    subprocess.run(["umount", "-l", target], capture_output=True)


@contextlib.contextmanager
def _read_only_view(source: str, target: str):
  """`source` seen read-only at `target` (a bind mount remounted ro)."""
  with _mounted(target, "--bind", source):
    if not _mount("-o", "remount,bind,ro", target):
      pytest.skip("a read-only remount is not permitted here")
    yield target


# ------------------------------------------------------------- numbers ---


@pytest.mark.parametrize(
  "field,value,message",
  [
    (
      "checkpoint_every_secs",
      -1.0,
      "config.checkpoint_every_secs must be a finite number >= 0 (0 = off), got -1.0",
    ),
    ("checkpoint_every_secs", float("nan"), "config.checkpoint_every_secs must be a finite"),
    ("keep_period", -1, "config.keep_period must be a non-negative integer, got -1"),
    ("num_grid_images", -1, "config.num_grid_images must be a non-negative integer, got -1"),
    ("tensorboard", 1, "config.tensorboard must be true or false, got 1"),
    ("model.remat", "yes", "config.model.remat must be true or false, got 'yes'"),
  ],
)
def test_config_numbers_and_booleans_are_checked(field, value, message):
  config = tiny_config("/unused")
  parent, _, name = field.rpartition(".")
  holder = config[parent] if parent else config
  with holder.ignore_type():
    holder[name] = value
  with pytest.raises(
    ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
  ):
    config_lib.validate(config)


BAD_NUMBERS = [
  ("--config.num_grid_images=-1", "error: config.num_grid_images must be a non-negative"),
  ("--config.keep_period=-1", "error: config.keep_period must be a non-negative"),
  ("--config.checkpoint_every_secs=-1", "error: config.checkpoint_every_secs must be"),
  (
    "--config.dataset.random_crop=yes",
    "error: flag --config.dataset.random_crop=yes: ('Non-boolean argument to boolean flag', 'yes')",
  ),
]


@pytest.mark.slow
def test_bad_numbers_on_the_command_line_are_one_line(tmp_path):
  main = [sys.executable, "-m", "minr_jax.main", "--config=configs/transinr.py:tiny"]
  commands = [
    [*main, f"--workdir={tmp_path}/run{i}", arg] for i, (arg, _) in enumerate(BAD_NUMBERS)
  ]
  for i, ((_, message), out) in enumerate(zip(BAD_NUMBERS, run_at_once(commands, cwd=ROOT))):
    lines = [l for l in out.stderr.splitlines() if l.strip() and not l.startswith("W1")]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-1500:]
    assert lines[-1].startswith(message), lines[-1]
    assert not os.path.exists(tmp_path / f"run{i}" / "checkpoints")


def test_evaluate_refuses_a_negative_image_count():
  with pytest.raises(ConfigError, match=r"--max_images must be >= 0 \(0 = all\), got -1"):
    runner.evaluate_workdir("/nonexistent", max_images=-1)


# ------------------------------------------------------- damaged steps ---


def test_load_skips_empty_and_half_written_steps(trained, tmp_path, capsys):
  workdir = _copy(trained, tmp_path)
  os.makedirs(os.path.join(workdir, "checkpoints", "6"))  # a crash left it empty
  assert minr_jax.load(workdir).step == 4
  assert (
    f"warning: checkpoint {workdir}/checkpoints/6 is corrupt (the folder is empty); "
    "using the previous one"
  ) in capsys.readouterr().out
  with pytest.raises(
    ConfigError,
    match=r"checkpoints/6 is corrupt \(the folder is empty\); "
    "pass another step",
  ):
    minr_jax.load(workdir, 6)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "4", "state"))  # half-written
  assert minr_jax.load(workdir).step == 2
  assert "checkpoints/4 is corrupt (state is missing or empty" in capsys.readouterr().out


def test_a_damaged_step_without_a_manifest_is_corrupt_not_a_traceback(trained, tmp_path, capsys):
  workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, "checkpoints", "4", checkpoint.MANIFEST))
  for target in _state_files(workdir, 4):  # truncated, and nothing to verify it
    data = open(target, "rb").read()
    open(target, "wb").write(data[: len(data) // 2])
  manager = checkpoint.open_read_only(workdir)
  assert checkpoint.verify(manager, 4) is None  # no manifest: only the restore can tell
  assert minr_jax.load(workdir).step == 2
  assert f"checkpoint {workdir}/checkpoints/4 is corrupt (" in capsys.readouterr().out
  with pytest.raises(ConfigError, match=r"checkpoints/4 is corrupt \(.+\); pass another step"):
    minr_jax.load(workdir, 4)


def test_restore_errors_become_one_short_reason():
  inner = ValueError('DATA_LOSS: Error reading "params.x" in OCDBT database: bad checksum')
  outer = Exception("Encountered error while reading array index")
  outer.__cause__ = inner
  assert checkpoint.restore_error(outer).startswith('DATA_LOSS: Error reading "params.x"')
  assert checkpoint.restore_error(RuntimeError("Event loop is closed")) == (
    "RuntimeError: Event loop is closed"
  )
  assert checkpoint.restore_error(KeyError("Unknown key: state")).startswith(
    "KeyError: 'Unknown key: state'"
  )


@pytest.mark.slow
def test_resume_sets_aside_an_empty_newest_step(trained, tmp_path, capsys):
  workdir, config = _copy(trained, tmp_path), trained[1].copy_and_resolve_references()
  os.makedirs(os.path.join(workdir, "checkpoints", "6"))
  config.num_train_steps = 6
  loop.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert "checkpoints/6 is corrupt (the folder is empty); skipping it" in out
  assert f"resumed from {workdir}/checkpoints/4" in out
  assert os.listdir(os.path.join(workdir, "corrupt_checkpoints"))  # set aside, not deleted
  assert minr_jax.load(workdir).step == 6


# ----------------------------------------------------------- full disk ---


@pytest.mark.slow
def test_a_full_disk_keeps_the_earlier_checkpoints_and_the_next_start_resumes(trained, tmp_path):
  config = trained[1].copy_and_resolve_references()
  config.num_train_steps, config.eval_every_steps = 2, 6
  with _mounted(str(tmp_path / "small"), "-t", "tmpfs", "-o", "size=16m", "tmpfs") as fs:
    workdir = os.path.join(fs, "run")
    loop.train_and_evaluate(config, workdir)  # checkpoint 2
    filler = os.path.join(fs, "filler")
    with open(filler, "wb") as f:  # leave 32 KB: step 4's save cannot fit
      os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(fs).free - 32768)
    config.num_train_steps = 6
    with pytest.raises(
      ConfigError,
      match=(
        rf"^no space left on the device of {workdir}/checkpoints while saving step 4 "
        r"\(the state is [\d.]+ KB, [\d.]+ (KB|bytes) free\); the earlier checkpoints "
        "there are intact$"
      ),
    ):
      loop.train_and_evaluate(config, workdir)
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]  # no half-written 4
    assert checkpoint.verify(checkpoint.open_read_only(workdir), 2) is None
    assert minr_jax.load(workdir).step == 2
    os.remove(filler)
    loop.train_and_evaluate(config, workdir)  # resumes from step 2
    assert minr_jax.load(workdir).step == 6


def test_disk_full_is_recognised_in_each_form():
  assert checkpoint.disk_full(OSError(28, "No space left on device"))
  assert checkpoint.disk_full(ValueError("RESOURCE_EXHAUSTED: Error writing local file"))
  assert not checkpoint.disk_full(ValueError("DATA_LOSS: checksum"))


# ------------------------------------------------------ read-only workdir ---


@pytest.mark.slow
def test_read_commands_work_on_a_read_only_workdir_and_training_refuses(
  trained, tmp_path, monkeypatch, capsys
):
  workdir, config, _, _ = trained
  with _read_only_view(workdir, str(tmp_path / "ro")) as ro:
    assert not paths.writable(ro)
    assert minr_jax.load(ro).step == 4
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    step, _ = runner.evaluate_workdir(ro)
    fallback = os.path.join(tmp_path, "cache", "minr_jax", "results", "ro", "eval", "4")
    assert f"note: {ro} is read-only; writing the results to {fallback}" in (
      capsys.readouterr().out
    )
    assert os.path.exists(os.path.join(fallback, "results.json"))
    mine = str(tmp_path / "mine")
    runner.evaluate_workdir(ro, output=mine)
    assert os.path.exists(os.path.join(mine, "results.json"))
    assert export.export(ro, str(tmp_path / "exported")) == 4
    with pytest.raises(ConfigError, match=f"--workdir={ro} is not writable"):
      loop.train_and_evaluate(config, ro)


def test_results_dir_prefers_output_then_the_workdir(tmp_path):
  assert paths.results_dir(str(tmp_path), "eval", 3, str(tmp_path / "o")) == str(tmp_path / "o")
  assert paths.results_dir(str(tmp_path), "eval", 3) == str(tmp_path / "eval" / "3")


# ------------------------------------------------------------ odd inputs ---


@pytest.fixture(scope="module")
def model(trained):
  return minr_jax.load(trained[0])


@pytest.mark.parametrize(
  "transform,message",
  [
    (
      lambda x: x * 255.0,
      r"images must be in \[0, 1\], got values from .+; did you forget "
      "/ 255\\?",
    ),
    (lambda x: np.where(x > 0.5, np.nan, x), "images hold [0-9]+ NaN or infinite values"),
    (lambda x: np.where(x > 0.5, np.inf, x), "images hold [0-9]+ NaN or infinite values"),
    (lambda x: x - 0.5, r"images must be in \[0, 1\], got values from -"),
  ],
)
def test_images_that_are_not_pixels_are_refused(model, transform, message):
  x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
  for call in (
    lambda v: model.embed(v),
    lambda v: model.reconstruct(v),
    lambda v: model.render(v, 8, 8),
  ):
    with pytest.raises(ConfigError, match=message):
      call(transform(x))


def test_render_refuses_an_output_larger_than_memory(model, monkeypatch):
  monkeypatch.setattr(model_lib, "available_memory", lambda: 2**30)
  x = np.full((3, 16, 16, 3), 0.5, np.float32)
  with pytest.raises(
    ConfigError,
    match=r"^render: the output float32 \[3, 100000, 100000, "
    r"3\] needs 335\.3 GiB, more than the 1\.0 GiB of memory available",
  ):
    model.render(x, 100000, 100000)


def test_render_in_small_chunks_matches_reconstruct(model):
  x = np.random.default_rng(1).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
  pred, _ = model.reconstruct(x, mask=None)
  np.testing.assert_allclose(model.render(x, 16, 16, chunk=100), pred, atol=1e-6)
  big = model.render(x, 21, 13, chunk=50)  # a last chunk shorter than the others
  np.testing.assert_allclose(big, model.render(x, 21, 13), atol=1e-6)
  assert big.shape == (3, 21, 13, 3)


def test_probe_refuses_non_finite_embeddings():
  rng = np.random.default_rng(0)
  good = dict(embeddings=rng.normal(size=(8, 4)).astype(np.float32), labels=np.arange(8) % 2)
  bad = dict(good, embeddings=good["embeddings"].copy())
  bad["embeddings"][3, 1] = np.nan
  with pytest.raises(ConfigError, match=r"^test: 1 of 8 embeddings hold NaN or infinite"):
    probe.probe(good, bad)


def test_export_to_an_existing_file_is_one_line(tmp_path):
  target = tmp_path / "file"
  target.write_text("x")
  with pytest.raises(ConfigError, match=f"^--output={target} is a file, not a folder"):
    export.export("/nonexistent", str(target))


# ------------------------------------------- steps without a manifest (issue 32) ---


def _flip_a_byte(workdir: str, step: int) -> None:
  for target in _state_files(workdir, step):
    data = bytearray(open(target, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(target, "wb").write(bytes(data))


def _unverified_line(workdir: str, step: int) -> str:
  where = f"{workdir}/checkpoints/{step}"
  return (
    f"warning: checkpoint {where} has no {checkpoint.MANIFEST}, so its integrity cannot be "
    f"verified; once you have checked it, write one with: python -m minr_jax.export "
    f"--workdir={where} --write_manifest"
  )


def test_commands_on_steps_without_a_manifest_print_lines_not_tracebacks(trained, tmp_path):
  """evaluate falls back from a damaged step without a manifest and exits 0 with no
  traceback after it; export --write_manifest gives an unverified step its manifest."""
  damaged, plain = _copy(trained, tmp_path, "damaged"), _copy(trained, tmp_path, "plain")
  for workdir in (damaged, plain):
    os.remove(os.path.join(workdir, "checkpoints", "4", checkpoint.MANIFEST))
  _flip_a_byte(damaged, 4)
  evaluate, write = run_at_once(
    [
      [sys.executable, "-m", "minr_jax.evaluate", f"--workdir={damaged}", f"--output={tmp_path}/e"],
      [
        sys.executable,
        "-m",
        "minr_jax.export",
        f"--workdir={plain}/checkpoints/4",
        "--write_manifest",
      ],
    ],
    cwd=ROOT,
  )
  assert evaluate.returncode == 0, evaluate.stderr[-2000:]
  assert "Traceback" not in evaluate.stderr and "Event loop is closed" not in evaluate.stderr
  lines = evaluate.stdout.splitlines()
  assert lines[0] == _unverified_line(damaged, 4)
  assert lines[1].startswith(f"warning: checkpoint {damaged}/checkpoints/4 is corrupt (")
  assert lines[1].endswith("; using the previous one")
  assert any(l.startswith("eval step 2 ") for l in lines)
  assert write.returncode == 0 and "Traceback" not in write.stderr, write.stderr[-2000:]
  manifest = os.path.join(plain, "checkpoints", "4", checkpoint.MANIFEST)
  assert write.stdout.strip().splitlines()[-1] == f"wrote {manifest}"
  assert checkpoint.verify(checkpoint.open_read_only(plain), 4) is None


def test_a_step_without_a_manifest_is_named_once_and_can_be_given_one(trained, tmp_path, capsys):
  workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, "checkpoints", "4", checkpoint.MANIFEST))
  first = minr_jax.load(workdir)
  assert minr_jax.load(workdir).step == first.step == 4
  out = capsys.readouterr().out
  assert out.count(_unverified_line(workdir, 4)) == 1, out  # once per process
  resumed = []  # what resuming prints (train_and_evaluate reads the steps this way)
  checkpoint._UNVERIFIED.clear()
  assert checkpoint.intact_steps(checkpoint.open_read_only(workdir), resumed.append) == [4, 2]
  assert resumed == [_unverified_line(workdir, 4)]

  manifest = export.write_manifest(os.path.join(workdir, "checkpoints", "4"))
  assert manifest == os.path.join(workdir, "checkpoints", "4", checkpoint.MANIFEST)
  with pytest.raises(ConfigError, match=r"checkpoints/4 already has its minr_checksums.json"):
    export.write_manifest(workdir, 4)
  with pytest.raises(ConfigError, match=r"--write_manifest needs one step"):
    export.write_manifest(workdir)
  _flip_a_byte(workdir, 4)  # what went unnoticed without a manifest
  assert minr_jax.load(workdir).step == 2
  out = capsys.readouterr().out
  assert "checkpoints/4 is corrupt (state/" in out and "does not match its checksum" in out


_LOOP_CLOSED_EARLY = """
import asyncio
import numpy as np
import tensorstore as ts
import minr_jax.checkpoint  # noqa: F401 (closes orbax's loops only after their tasks)
from orbax.checkpoint._src import asyncio_utils

async def restore_like():  # many reads in flight, one of them fails at once
  t = await ts.open({"driver": "zarr", "kvstore": {"driver": "memory"}}, create=True,
                    dtype=ts.float32, shape=[1000, 1000])
  async def read(future):
    return await future
  async def damaged():
    raise ValueError("DATA_LOSS: a damaged file")
  writes = [read(t.write(np.ones((1000, 1000), np.float32))) for _ in range(32)]
  await asyncio.gather(*writes, damaged())

try:
  asyncio_utils.run_sync(restore_like())
except ValueError as e:
  print(e)
"""


def test_orbax_event_loops_close_only_after_their_tasks():
  """The cause of `RuntimeError: Event loop is closed` after a failed restore: orbax
  closed its loop while tensorstore reads still had callbacks to deliver into it."""
  out = subprocess.run(
    [sys.executable, "-c", _LOOP_CLOSED_EARLY], capture_output=True, text=True, cwd=ROOT
  )
  assert out.stdout.strip() == "DATA_LOSS: a damaged file", out.stderr[-2000:]
  assert "Event loop is closed" not in out.stderr and "Traceback" not in out.stderr
