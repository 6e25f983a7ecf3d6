"""minr_jax.app: the page's JSON API over HTTP, and the page itself in a headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from helpers import smooth_image
from PIL import Image

import minr_jax
from minr_jax import app
from minr_jax.config import ConfigError
from minr_jax.inference import inpaint as inpaint_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained", "celeba64")
BAD = "/nonexistent/minr_run"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]


def face(height=80, width=96) -> np.ndarray:
  """uint8 [80, 96, 3]: the astronaut's face (scikit-image's bundled photo), area-resized."""
  import skimage.data  # noqa: PLC0415

  crop = Image.fromarray(skimage.data.astronaut()[20:200, 120:336])
  return np.asarray(crop.resize((width, height), Image.Resampling.BOX))


def png_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def from_url(url: str) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def quantized(x: np.ndarray) -> np.ndarray:
  return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def server():
  s = app.start([PRETRAINED, BAD], port=0, max_side=256)
  yield s
  s.close()


def call(server, path, payload=None, raw=None, headers=None):
  """(status, JSON) of GET path, or POST of a JSON payload / raw bytes."""
  data = raw if raw is not None else None if payload is None else json.dumps(payload).encode()
  request = urllib.request.Request(server.url + path, data=data, headers=headers or {})
  try:
    with urllib.request.urlopen(request, timeout=120) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def fill_request(photo, mask, checkpoint=PRETRAINED, name="face.png"):
  return {
    "photo": app.png_url(photo),
    "name": name,
    "checkpoint": checkpoint,
    "mask": mask,
  }


def painted(mask: np.ndarray) -> dict:
  return {"kind": "paint", "png": app.png_url(mask.astype(np.uint8) * 255)}


def load_error(path: str) -> str:
  with pytest.raises(ConfigError) as e:
    minr_jax.load(path)
  return str(e.value)


# ------------------------------------------------------------------- http ---


def test_page_is_self_contained_and_bound_to_localhost(server):
  assert server.url.startswith("http://127.0.0.1:")
  with urllib.request.urlopen(server.url, timeout=30) as r:
    page = r.read().decode()
    policy = r.headers["Content-Security-Policy"]
  assert "<canvas" in page and "api/inpaint" in page
  for external in ("http://", "https://", "//fonts", "<link", 'src="http'):
    assert external not in page, external
  assert "connect-src 'self'" in policy and "default-src 'none'" in policy
  status, info = call(server, "api/info")
  assert status == 200 and [c["name"] for c in info["checkpoints"]] == [PRETRAINED, BAD]
  assert info["samples"] == ["astronaut", "chelsea", "coffee"] and info["max_side"] == 256


def test_fill_is_inpaint_of_the_photo_and_mask(server):
  photo = face()
  mask = np.zeros(photo.shape[:2], bool)
  mask[20:50, 30:70] = True
  status, r = call(server, "api/inpaint", fill_request(photo, painted(mask)))
  assert status == 200, r
  model = server.app.model(PRETRAINED)
  expected = inpaint_lib.inpaint(model, photo, mask)
  keys = [c["key"] for c in r["columns"]]
  assert keys == ["masked", *[k for k in expected.psnr if k != "minr"], "minr", "photo"]
  for c in r["columns"]:
    if c["psnr"] is not None:
      assert c["psnr"] == pytest.approx(expected.psnr[c["key"]], abs=1e-6), c["key"]
  filled = from_url(r["filled"])
  assert filled.shape == photo.shape and r["filename"] == "face_filled.png"
  np.testing.assert_array_equal(filled[~mask], photo[~mask])
  np.testing.assert_array_equal(filled, quantized(model.inpaint(photo, mask)))
  minr = from_url(next(c["png"] for c in r["columns"] if c["key"] == "minr"))
  np.testing.assert_array_equal(minr, quantized(expected.minr))
  assert r["hidden_fraction"] == pytest.approx(mask.mean())


def test_box_and_random_masks_are_the_commands(server):
  photo = face()
  model = server.app.model(PRETRAINED)
  for mask, text in [
    ({"kind": "box", "box": "0.25,0.25,0.75,0.75"}, "box:0.25,0.25,0.75,0.75"),
    ({"kind": "random", "ratio": "0.5", "seed": "3"}, "random:0.5:seed=3"),
  ]:
    status, r = call(server, "api/inpaint", fill_request(photo, mask))
    assert status == 200, r
    expected = inpaint_lib.inpaint(model, photo, text)
    shown = {c["key"]: c["psnr"] for c in r["columns"] if c["psnr"] is not None}
    assert shown == pytest.approx(expected.psnr, abs=1e-6)
    status, preview = call(
      server, "api/mask", {"width": 96, "height": 80, "checkpoint": PRETRAINED, "mask": mask}
    )
    assert status == 200
    np.testing.assert_array_equal(from_url(preview["png"])[..., 1] > 127, expected.mask)


@pytest.mark.parametrize(
  "mask, message",
  [
    (painted(np.zeros((80, 96), bool)), "the mask hides no pixel of the photo"),
    (painted(np.ones((80, 96), bool)), "the mask hides every pixel of the photo"),
    (painted(np.ones((10, 10), bool)), "the mask is 10x10 but the photo is 96x80"),
    ({"kind": "paint", "png": "not a URL"}, "the painted mask is not a data: URL"),
    ({"kind": "box", "box": "0,0,200,10"}, "reaches outside the 96x80 image"),
    ({"kind": "box", "box": "/etc/passwd"}, "is not a box x0,y0,x1,y1"),
    ({"kind": "random", "ratio": "2", "seed": "0"}, "ratio 2 must be in (0, 1]"),
    ({"kind": "random", "ratio": "0.5", "seed": "-1"}, "is not seed=N or grid=N"),
    ({"kind": "file", "path": "/etc/passwd"}, "unknown mask kind 'file'"),
    (None, "no mask"),
  ],
)
def test_bad_masks_are_one_line_answers(server, mask, message):
  status, r = call(server, "api/inpaint", fill_request(face(), mask))
  assert status == 400 and message in r["error"] and "\n" not in r["error"], r


def test_bad_photos_and_checkpoints_are_answered(server, monkeypatch):
  status, r = call(server, "api/photo", raw=b"plain text", headers={"X-File-Name": "notes.txt"})
  assert status == 400 and r["error"].startswith("cannot read notes.txt as an image"), r
  status, r = call(server, "api/photo", raw=b"", headers={"X-File-Name": "empty.png"})
  assert status == 400 and r["error"] == "empty.png is empty: no photo"
  big = smooth_image(np.random.default_rng(0), 200, 300)
  status, r = call(server, "api/photo", raw=png_bytes(big), headers={"X-File-Name": "big.png"})
  assert status == 200 and (r["width"], r["height"]) == (256, 171)
  assert r["notes"] == [
    "big.png is 300x200, above this page's limit of 256 pixels a side: scaled down to 256x171"
  ]
  status, r = call(server, "api/sample/coffee")
  assert status == 200 and (r["width"], r["height"]) == (256, 171) and r["notes"]
  assert call(server, "api/sample/lena")[0] == 400
  mask = {"kind": "box", "box": "0.25,0.25,0.75,0.75"}
  status, r = call(server, "api/inpaint", fill_request(face(), mask, checkpoint=BAD))
  assert status == 400 and r["error"] == load_error(BAD)
  status, r = call(server, "api/inpaint", fill_request(face(), mask, checkpoint="elsewhere"))
  assert status == 400 and "is not offered here" in r["error"]
  status, r = call(server, "api/inpaint", raw=b"{not json")
  assert status == 400 and r["error"] == "the request is not JSON"
  monkeypatch.setattr(app, "MAX_UPLOAD", 1000)
  status, r = call(server, "api/photo", raw=png_bytes(big), headers={"X-File-Name": "big.png"})
  assert status == 413 and "over this page's limit" in r["error"]
  monkeypatch.undo()
  status, r = call(server, "api/info")  # still serving
  assert status == 200


def test_two_requests_at_once_keep_their_own_results(server):
  model = server.app.model(PRETRAINED)
  photos = [face(), smooth_image(np.random.default_rng(1), 80, 96)]
  masks = [np.zeros((80, 96), bool) for _ in photos]
  masks[0][10:40, 10:40] = True
  masks[1][40:75, 50:90] = True
  answers = [None, None]

  def ask(i):
    answers[i] = call(server, "api/inpaint", fill_request(photos[i], painted(masks[i])))

  threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(120)
  for photo, mask, (status, r) in zip(photos, masks, answers):
    assert status == 200, r
    expected = inpaint_lib.inpaint(model, photo, mask)
    np.testing.assert_array_equal(from_url(r["filled"]), quantized(expected.filled))
    shown = {c["key"]: c["psnr"] for c in r["columns"] if c["psnr"] is not None}
    assert shown == pytest.approx(expected.psnr, abs=1e-6)


def test_result_columns_take_every_scored_baseline():
  class Result:  # a result with a baseline the library may add (a table of fills)
    psnr = {"minr": 20.0, "interpolation": 18.0, "mean_fill": 12.0, "telea": 19.0}
    minr = np.zeros((2, 2, 3))
    interpolation = np.ones((2, 2, 3))
    mean_fill = np.ones((2, 2, 3))
    baselines = {"telea": np.full((2, 2, 3), 0.5)}

  keys = [k for k, _ in app.result_columns(Result())]
  assert keys == ["interpolation", "mean_fill", "telea", "minr"]


def test_colab_notebook_and_inline_display_outside_colab(server):
  import nbformat  # noqa: PLC0415

  nb = nbformat.read(os.path.join(ROOT, "colabs", "app.ipynb"), as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  assert any("show_inline" in c.source for c in code)
  for c in code:
    compile(c.source, "cell", "exec")
  assert app.show_inline(server) is False  # no google.colab here: nothing shown, no error


@pytest.mark.slow
def test_command_prints_its_url_and_answers_a_checkpoint_that_does_not_load():
  process = subprocess.Popen(
    [sys.executable, "-m", "minr_jax.app", f"--workdir={BAD}", "--noshipped", "--port=0"],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    cwd=ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT},
  )
  try:
    line = process.stdout.readline()
    assert line.startswith("MINR app: http://127.0.0.1:"), line + process.stderr.read()
    url = line.split()[2]
    with urllib.request.urlopen(url + "api/info", timeout=30) as r:
      assert [c["name"] for c in json.loads(r.read())["checkpoints"]] == [BAD]
    request = urllib.request.Request(
      url + "api/inpaint", json.dumps(fill_request(face(), None, checkpoint=BAD)).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as e:
      urllib.request.urlopen(request, timeout=30)
    assert json.loads(e.value.read())["error"] == load_error(BAD)
  finally:
    process.terminate()
    _, err = process.communicate(timeout=30)
  assert f"error: {load_error(BAD)}" in err


# ---------------------------------------------------------------- browser ---


@pytest.mark.slow
def test_in_a_browser_paint_fill_download(server, tmp_path):
  """Chromium opens the page, uploads a photo, paints a hole with the mouse, runs it, then
  random patches; the numbers shown are inpaint.inpaint's for the photo and the mask the
  page sent; the download is the filled photo; no request leaves localhost."""
  sync_api = pytest.importorskip("playwright.sync_api")
  if not os.path.exists(CHROMIUM):
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)")
  photo = face()
  photo_path = tmp_path / "face.png"
  photo_path.write_bytes(png_bytes(photo))
  (tmp_path / "notes.txt").write_text("not an image")
  model = server.app.model(PRETRAINED)
  requests, foreign, sent = [], [], []

  def route(r):  # every request the page makes passes here; another host is refused
    requests.append(r.request.url)
    if urllib.parse.urlsplit(r.request.url).hostname not in ("127.0.0.1", "localhost"):
      foreign.append(r.request.url)
      return r.abort()
    if r.request.url.endswith("/api/inpaint"):
      sent.append(r.request.post_data_json)
    return r.continue_()

  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    try:
      context = browser.new_context(viewport={"width": 1100, "height": 820}, accept_downloads=True)
      context.route("**/*", route)
      page = context.new_page()
      page.goto(server.url)
      page.wait_for_selector("#checkpoint option", state="attached")
      page.select_option("#checkpoint", PRETRAINED)

      # A file that is not an image: the server's one line, in the page.
      page.set_input_files("#file", str(tmp_path / "notes.txt"))
      page.wait_for_selector("#status.error")
      assert page.text_content("#status").startswith("cannot read notes.txt as an image")

      # Upload, paint a stroke across the middle, fill.
      page.set_input_files("#file", str(photo_path))
      page.wait_for_selector("#run:not([disabled])")
      box = page.locator("#overlay").bounding_box()
      assert box["width"] == pytest.approx(96 * 4)  # small photos are shown 4x
      x, y, w, h = box["x"], box["y"], box["width"], box["height"]
      page.mouse.move(x + 0.3 * w, y + 0.45 * h)
      page.mouse.down()
      page.mouse.move(x + 0.7 * w, y + 0.55 * h, steps=10)
      page.mouse.up()
      page.click("#run")
      page.wait_for_selector('#results[data-runs="1"]', timeout=60_000)
      mask = from_url(sent[0]["mask"]["png"])
      mask = (mask if mask.ndim == 2 else mask[..., 0]) > 127  # read_mask_file's rule
      assert 0.03 < mask.mean() < 0.5 and mask[40, 48] and not mask[5, 5]
      expected = inpaint_lib.inpaint(model, photo, mask)
      keys = page.eval_on_selector_all("figure", "fs => fs.map(f => f.dataset.key)")
      assert keys == [
        "masked",
        "interpolation",
        "mean_fill",
        *inpaint_lib.OTHER_BASELINES,
        "minr",
        "photo",
      ]
      for key, value in expected.psnr.items():
        span = page.locator(f'figure[data-key="{key}"] .psnr')
        assert span.text_content() == f"{value:.2f} dB", key
        assert float(span.get_attribute("data-psnr")) == pytest.approx(value, abs=1e-6)
      assert f"{100 * mask.mean():.1f}% hidden" in page.text_content("#summary")
      page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
      if os.environ.get("MINR_APP_SCREENSHOT"):  # docs/images/app.png is written this way
        page.screenshot(path=os.environ["MINR_APP_SCREENSHOT"], full_page=True)

      with page.expect_download() as download:
        page.click("#download")
      assert download.value.suggested_filename == "face_filled.png"
      filled = np.asarray(Image.open(download.value.path()))
      assert filled.shape == photo.shape
      np.testing.assert_array_equal(filled[~mask], photo[~mask])  # visible pixels unchanged
      np.testing.assert_array_equal(filled, quantized(model.inpaint(photo, mask)))

      # Random patches with a ratio and a seed: the command's random:0.5:seed=3.
      page.check('input[name="mode"][value="random"]')
      page.fill("#ratio", "0.5")
      page.fill("#seed", "3")
      page.press("#seed", "Tab")
      page.click("#run")
      page.wait_for_selector('#results[data-runs="2"]', timeout=60_000)
      expected = inpaint_lib.inpaint(model, photo, "random:0.5:seed=3")
      assert sent[1]["mask"] == {"kind": "random", "ratio": "0.5", "seed": "3"}
      for key, value in expected.psnr.items():
        span = page.locator(f'figure[data-key="{key}"] .psnr')
        assert span.text_content() == f"{value:.2f} dB", key

      # A checkpoint that does not load: the library's one line, in the page.
      page.select_option("#checkpoint", BAD)
      page.click("#run")
      page.wait_for_selector("#status.error")
      assert page.text_content("#status") == load_error(BAD)
    finally:
      browser.close()
  assert requests and all(u.startswith(server.url) for u in requests), requests
  assert foreign == []
