"""gs:// paths against a real GCS server: the gcp-storage-emulator package on a local port.

The emulator speaks GCS's JSON API; gcsfs (what etils.epath uses for gs://)
finds it through STORAGE_EMULATOR_HOST, tensorstore (what orbax writes
arrays with) through TENSORSTORE_GCS_HTTP_URL. Nothing leaves this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers import make_image_folder, tiny_config

import minr_jax
from minr_jax import paths, writers
from minr_jax.config import ConfigError, load_saved
from minr_jax.evaluation import runner
from minr_jax.inference import embed
from minr_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "minr-test"
RUN = f"gs://{BUCKET}/run"


# Runs gcp-storage-emulator with one fix: its downloads lack the x-goog-generation
# header real GCS sends, which tensorstore needs to read an OCDBT manifest back
# (orbax's checkpoint format); without it a save of many arrays fails with
# "Malformed StorageGeneration".
EMULATOR = """
import sys
from gcp_storage_emulator.handlers import objects

_download = objects.download

def download(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj["metageneration"])

objects.download = download  # before the server module builds its routes
from gcp_storage_emulator.__main__ import main
main(sys.argv[1:])
"""


def _emulator_env(url: str) -> dict[str, str]:
  """What points gcsfs, etils.epath and tensorstore at the emulator, with no credentials."""
  return {
    "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage
    "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore (orbax's array writes)
    # A fixed bearer token: tensorstore neither looks for credentials nor asks
    # the metadata server; the emulator ignores it.
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
    "FSSPEC_GS_TOKEN": "anon",  # gcsfs sends no credentials
    "NO_GCE_CHECK": "true",
    # gcsfs's default file system first asks the Storage Control gRPC API for the
    # bucket's layout, which the emulator does not serve (a 60 s timeout per call).
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
  }


def _use_plain_gcsfs() -> None:
  """In this process: gs:// through gcsfs's plain GCSFileSystem, fresh instances."""
  import fsspec
  import gcsfs.core
  from etils import epath

  for protocol in ("gs", "gcs"):
    fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
    fsspec.config.conf.setdefault(protocol, {})["token"] = "anon"
  gcsfs.core.GCSFileSystem.clear_instance_cache()
  epath.backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """A fresh in-memory GCS emulator holding BUCKET; yields the environment for subprocesses."""
  pytest.importorskip("gcp_storage_emulator")
  pytest.importorskip("gcsfs")
  import portpicker

  port = portpicker.pick_unused_port()
  url = f"http://localhost:{port}"
  log = open(tmp_path_factory.mktemp("emulator") / "emulator.log", "w")  # noqa: SIM115
  proc = subprocess.Popen(
    [sys.executable, "-c", EMULATOR, "start", f"--port={port}", "--in-memory", "-q"],
    stdout=log,
    stderr=subprocess.STDOUT,
  )
  deadline = time.time() + 60
  while True:
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).read()
      break
    except OSError:
      if proc.poll() is not None or time.time() > deadline:
        proc.kill()
        pytest.fail(f"the storage emulator did not start (see {log.name})")
      time.sleep(0.2)
  env = _emulator_env(url)
  patch = pytest.MonkeyPatch()
  for name, value in env.items():
    patch.setenv(name, value)
  patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))  # data_dir mirrors
  _use_plain_gcsfs()
  import gcsfs.core

  gcsfs.core.GCSFileSystem(token="anon").mkdir(BUCKET)
  yield {**os.environ, **env}
  patch.undo()
  proc.kill()
  proc.wait()
  log.close()


def _objects(prefix: str) -> list[str]:
  """Every object name below gs://<prefix>, relative to it."""
  import gcsfs.core

  fs = gcsfs.core.GCSFileSystem(token="anon")
  fs.invalidate_cache()
  return sorted(name[len(prefix) + 1 :] for name in fs.find(prefix))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_image_folder(str(tmp_path_factory.mktemp("gcs_images")))


def _config(data_dir: str, folder: str, steps: int):
  # A constant learning rate: then 2 steps and a resume to 4 are the 4-step run.
  return tiny_config(data_dir, folder, num_train_steps=steps, lr_decay_factor=1.0, tensorboard=True)


@pytest.fixture(scope="module")
def runs(gcs, folder, tmp_path_factory):
  """A gs:// run (2 steps, then resumed to 4) and the same 4 steps straight, locally.

  Both run from an empty working directory, which must stay empty.
  """
  root = tmp_path_factory.mktemp("runs")
  cwd = root / "cwd"
  cwd.mkdir()
  data_dir, local = str(root / "tfds"), str(root / "local")
  old = os.getcwd()
  os.chdir(cwd)
  try:
    loop.train_and_evaluate(_config(data_dir, folder, 2), RUN)
    after_two = _objects(f"{BUCKET}/run")
    final = loop.train_and_evaluate(_config(data_dir, folder, 4), RUN)
    straight = loop.train_and_evaluate(_config(data_dir, folder, 4), local)
  finally:
    os.chdir(old)
  return dict(
    cwd=cwd, local=local, after_two=after_two, final=final, straight=straight, data_dir=data_dir
  )


def _train_records(workdir: str) -> dict[int, dict]:
  return {
    r["step"]: r
    for r in writers.read_metrics(os.path.join(workdir, "metrics.jsonl"))
    if r["split"] == "train"
  }


@pytest.mark.slow
def test_a_gs_run_lands_in_the_bucket_and_resumes_exactly(runs):
  assert "checkpoints/2/_CHECKPOINT_METADATA" in runs["after_two"]
  assert not any(name.startswith("checkpoints/4/") for name in runs["after_two"])
  names = _objects(f"{BUCKET}/run")
  for expected in (
    "config.json",
    "metrics.jsonl",
    "final_eval.json",
    "checkpoints/2/_CHECKPOINT_METADATA",
    "checkpoints/4/_CHECKPOINT_METADATA",
  ):
    assert expected in names
  assert any(n.startswith("images/eval_0000004_") and n.endswith(".png") for n in names)
  assert any(n.startswith("tensorboard/train/events.out.tfevents") for n in names)
  assert any(n.startswith("tensorboard/images/events.out.tfevents") for n in names)
  assert not any(n.startswith("checkpoints/") and "tmp" in n for n in names)
  # The resumed run's losses are the uninterrupted local run's.
  remote, local = _train_records(RUN), _train_records(runs["local"])
  assert sorted(remote) == sorted(local) == [1, 2, 3, 4]
  for step in range(1, 5):
    assert remote[step]["loss"] == pytest.approx(local[step]["loss"], rel=1e-5, abs=1e-7)
  label = next(iter(runs["final"]))
  assert runs["final"][label]["psnr_full"] == pytest.approx(
    runs["straight"][label]["psnr_full"], abs=1e-5
  )
  # Nothing went to a local folder: not the old `<cwd>/gs:/...`, not anything.
  assert os.listdir(runs["cwd"]) == []


@pytest.mark.slow
def test_evaluate_load_and_embed_read_and_write_gs(runs, folder, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  step, results = runner.evaluate_workdir(RUN)
  _, local_results = runner.evaluate_workdir(runs["local"])
  assert step == 4
  label = next(iter(results))
  assert results[label]["psnr_pasted"] == pytest.approx(
    local_results[label]["psnr_pasted"], abs=1e-5
  )
  names = _objects(f"{BUCKET}/run/eval/4")
  assert {"results.json", "results.csv", "results.md", "metrics.jsonl"} <= set(names)
  assert any(n.endswith(".png") for n in names)

  m, m_local = minr_jax.load(RUN), minr_jax.load(runs["local"])
  assert (m.step, m.workdir) == (4, RUN)
  assert minr_jax.load(f"{RUN}/checkpoints/2/").step == 2
  images = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(m.embed(images), m_local.embed(images), atol=1e-6)

  dataset = f"image_folder:{folder}"
  summary = embed.embed_dataset(m, dataset, output=f"gs://{BUCKET}/emb/e.npz", progress=False)
  local_npz = str(tmp_path / "e.npz")
  embed.embed_dataset(m_local, dataset, output=local_npz, progress=False)
  got, want = embed.read_embeddings(f"gs://{BUCKET}/emb/e.npz"), embed.read_embeddings(local_npz)
  assert summary["num_images"] == got["embeddings"].shape[0] == 4
  np.testing.assert_allclose(got["embeddings"], want["embeddings"], atol=1e-6)
  embed.embed_dataset(m, dataset, output=f"gs://{BUCKET}/emb/e.array_record", progress=False)
  records = embed.read_embeddings(f"gs://{BUCKET}/emb/e.array_record")
  np.testing.assert_allclose(records["embeddings"], want["embeddings"], atol=1e-6)
  assert _objects(f"{BUCKET}/emb") == ["e.array_record", "e.npz"]
  assert load_saved(RUN).model.dim == m.config.model.dim
  assert os.listdir(tmp_path) == ["e.npz"]  # nothing else landed locally


@pytest.mark.slow
def test_image_folder_and_data_dir_on_gs(gcs, runs, folder, tmp_path, monkeypatch):
  """A bucket image folder, prepared into a bucket data_dir, then fetched by a fresh host."""
  import gcsfs.core

  from minr_jax import data

  fs = gcsfs.core.GCSFileSystem(token="anon")
  fs.put(folder, f"{BUCKET}/images", recursive=True)
  config = _config(f"gs://{BUCKET}/tfds", f"gs://{BUCKET}/images", 4)
  local = _config(runs["data_dir"], folder, 4)
  first = next(iter(data.make_eval_batches(config)))
  want = next(iter(data.make_eval_batches(local)))
  np.testing.assert_array_equal(first["image"], want["image"])
  prepared = [n for n in _objects(f"{BUCKET}/tfds") if n.endswith("dataset_info.json")]
  assert len(prepared) == 1 and prepared[0].startswith("image_folder/images-")
  # A host with an empty cache fetches the prepared data instead of preparing (a new
  # mirror folder: the process's cache of prepared folders does not hold it).
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other_host"))
  before = {n: fs.info(f"{BUCKET}/tfds/{n}")["generation"] for n in _objects(f"{BUCKET}/tfds")}
  again = next(iter(data.make_eval_batches(config)))
  np.testing.assert_array_equal(again["image"], want["image"])
  mirror = paths.local_mirror(f"gs://{BUCKET}/tfds")
  assert mirror.startswith(str(tmp_path / "other_host"))
  assert os.path.isfile(os.path.join(mirror, prepared[0]))
  after = {n: fs.info(f"{BUCKET}/tfds/{n}")["generation"] for n in _objects(f"{BUCKET}/tfds")}
  assert after == before  # fetched, not prepared and uploaded again


@pytest.mark.slow
def test_metric_writer_rewrites_the_object_and_a_resumed_writer_continues_it(gcs):
  path = f"gs://{BUCKET}/writer/metrics.jsonl"
  with writers.MetricWriter(f"gs://{BUCKET}/writer", tensorboard=False, flush_every_secs=3600) as w:
    w.write(1, "train", {"loss": 1.0})
    assert not paths.as_path(path).exists()  # throttled: nothing uploaded yet
    w.flush()
    assert [r["step"] for r in writers.read_metrics(path)] == [1]
    w.write(2, "train", {"loss": 0.5})
  paths.write_text(path, paths.as_path(path).read_text() + '{"step": 3, "spl')  # killed mid-line
  with writers.MetricWriter(f"gs://{BUCKET}/writer", tensorboard=False) as w:
    w.write(3, "train", {"loss": 0.25})
  assert [r["step"] for r in writers.read_metrics(path)] == [1, 2, 3]
  with writers.MetricWriter(f"gs://{BUCKET}/off", enabled=False) as w:
    w.write(1, "train", {"loss": 1.0})
  assert not paths.as_path(f"gs://{BUCKET}/off/metrics.jsonl").exists()


@pytest.mark.slow
def test_an_unreachable_bucket_is_one_config_error(gcs, folder, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = _config(str(tmp_path / "tfds"), folder, 2)
  with pytest.raises(
    ConfigError,
    match=r"--workdir=gs://no-such-bucket/run: bucket "
    r"gs://no-such-bucket does not exist",
  ):
    loop.train_and_evaluate(config, "gs://no-such-bucket/run")
  with pytest.raises(ConfigError, match="no-such-bucket"):
    minr_jax.load("gs://no-such-bucket/run")
  with pytest.raises(ConfigError, match="--output=gs://no-such-bucket/e.npz"):
    embed.run(RUN, "demo", "gs://no-such-bucket/e.npz")
  assert os.listdir(tmp_path) == []


def test_a_url_scheme_nothing_serves_is_one_config_error(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = tiny_config(str(tmp_path / "tfds"))
  with pytest.raises(
    ConfigError,
    match=r"--workdir=foo://x/run: no file system serves "
    r"foo:// URLs",
  ):
    loop.train_and_evaluate(config, "foo://x/run")
  with pytest.raises(ConfigError, match="foo://"):
    minr_jax.load("foo://x/run")
  config.dataset.data_dir = "foo://x/tfds"
  with pytest.raises(ConfigError, match="config.dataset.data_dir=foo://x/tfds"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert os.listdir(tmp_path) == []  # no `foo:` folder


@pytest.mark.slow
def test_the_command_line_names_a_bad_url_in_one_line(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "minr_jax.main",
      "--config=configs/transinr.py:tiny",
      "--config.batch_size=8",
      "--config.eval_batch_size=8",  # the 8 test devices
      "--workdir=foo://x/run",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
    "error: --workdir=foo://x/run: no file system serves foo:// URLs (use a local path, "
    "gs:// or s3://)"
  )
  assert not os.path.exists(os.path.join(ROOT, "foo:"))


def test_local_paths_stay_local_and_urls_stay_urls(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(paths.as_path("run")) == str(tmp_path / "run")
  assert str(paths.as_path("gs://b/run")) == "gs://b/run"
  assert paths.abspath("gs://b/x/../y") == "gs://b/x/../y"
  assert (paths.is_url("gs://b"), paths.is_url("/gs:/b"), paths.is_url("a/b")) == (
    True,
    False,
    False,
  )
  paths.write_text("out/x.json", "{}")
  assert os.stat(tmp_path / "out" / "x.json").st_mode & 0o777 == 0o644
  assert os.listdir(tmp_path / "out") == ["x.json"]  # no temp file left
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  mirror = paths.local_mirror("gs://b/tfds/")
  assert mirror == str(tmp_path / "cache" / "minr_jax" / "mirror" / "gs" / "b" / "tfds")
  assert paths.remote_of(os.path.join(mirror, "x", "1.0.0")) == "gs://b/tfds/x/1.0.0"
  assert paths.remote_of(str(tmp_path / "elsewhere")) is None


def test_inpaint_reads_and_writes_gs(gcs, tmp_path, monkeypatch):
  """Photos and a mask PNG in a bucket, results to a bucket: nothing lands locally."""
  import gcsfs.core
  from helpers import smooth_image
  from PIL import Image

  from minr_jax import inpaint

  fs = gcsfs.core.GCSFileSystem(token="anon")
  rng = np.random.default_rng(0)
  for name, (h, w) in (("a.png", (37, 91)), ("sub/b.png", (37, 91))):
    local = tmp_path / name.replace("/", "_")
    Image.fromarray(smooth_image(rng, h, w)).save(local)
    fs.put(str(local), f"{BUCKET}/photos/{name}")
  pixels = np.zeros((37, 91), np.uint8)
  pixels[5:20, 10:40] = 255
  Image.fromarray(pixels).save(tmp_path / "m.png")
  fs.put(str(tmp_path / "m.png"), f"{BUCKET}/mask.png")
  work = tmp_path / "cwd"
  work.mkdir()
  monkeypatch.chdir(work)
  summary = inpaint.run(
    os.path.join(ROOT, "pretrained", "celeba64"),
    f"gs://{BUCKET}/photos",
    f"gs://{BUCKET}/mask.png",
    f"gs://{BUCKET}/inpainted",
    progress=False,
  )
  assert summary["num_images"] == 2
  assert _objects(f"{BUCKET}/inpainted") == [
    "a_compare.png",
    "a_filled.png",
    "results.json",
    "sub/b_compare.png",
    "sub/b_filled.png",
  ]
  with fs.open(f"{BUCKET}/inpainted/a_filled.png", "rb") as f, Image.open(f) as img:
    assert img.size == (91, 37)
    with Image.open(tmp_path / "a.png") as src:
      np.testing.assert_array_equal(np.asarray(img)[pixels == 0], np.asarray(src)[pixels == 0])
  assert os.listdir(work) == []
