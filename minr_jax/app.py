"""`minr-app` / `python -m minr_jax.app`: a local web page to paint a hole in a photo and see
MINR's fill beside the classical ones.

A static page and a small JSON API on the standard library's HTTP server: no new dependency,
nothing fetched from another host (docs/app.md). Every fill goes through `inpaint.inpaint`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

# Every project import of this module, in one block (the library modules may move).
import minr_jax
from minr_jax import classical, cli
from minr_jax.config import ConfigError
from minr_jax.inference import inpaint as inpaint_lib

MAX_SIDE = 1024  # a larger photo is scaled down (area averaging) to this many pixels a side
MAX_UPLOAD = 40 * 1024 * 1024  # bytes of one request
SAMPLES = ("astronaut", "chelsea", "coffee")  # scikit-image's bundled photos
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("pretrained/photos64", "pretrained/celeba64")  # photos first: any photo; then faces
TITLES = {
  "interpolation": classical.LABELS["gaussian"],
  "mean_fill": classical.LABELS["mean"],
  **{name: classical.LABELS[name] for name in ("telea", "navier_stokes", "biharmonic")},
  "minr": "MINR",
}


def shipped_checkpoints() -> list[str]:
  """The checkpoints shipped in the repository (SHIPPED) that exist beside this package."""
  return [os.path.join(ROOT, p) for p in SHIPPED if os.path.isdir(os.path.join(ROOT, p))]


def _label(path: str) -> str:
  """A checkpoint path as the page shows it: relative to the repository or the current folder."""
  if "://" in path:
    return path
  full = os.path.abspath(path)
  for base in (ROOT, os.getcwd()):
    if full.startswith(base + os.sep):
      return os.path.relpath(full, base)
  return path


def _one_line(text: str) -> str:
  return " ".join(str(text).split()) or "error"


# ------------------------------------------------------------- images ---


def _data_url(data: bytes, mime: str = "image/png") -> str:
  return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _url_bytes(text, what: str) -> bytes:
  """The bytes of a base64 data: URL; ConfigError naming `what` otherwise."""
  if not isinstance(text, str) or not text.startswith("data:") or "," not in text:
    raise ConfigError(f"{what} is not a data: URL")
  head, _, body = text.partition(",")
  if not head.endswith(";base64"):
    raise ConfigError(f"{what} is not a base64 data: URL")
  try:
    return base64.b64decode(body, validate=True)
  except (binascii.Error, ValueError):
    raise ConfigError(f"{what}: the base64 text does not decode") from None


def png_url(array: np.ndarray) -> str:
  """A PNG data: URL of an image [H, W], [H, W, C] (C in 1..4), uint8 or float in [0, 1]."""
  x = np.asarray(array)
  if x.dtype != np.uint8:
    x = np.round(np.clip(x.astype(np.float32), 0, 1) * 255).astype(np.uint8)
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(x).save(buffer, format="PNG")
  return _data_url(buffer.getvalue())


def _read_file_bytes(data: bytes, reader, what: str, flag: str):
  """reader(path) on the bytes written to a temporary file (the library reads files);
  its ConfigError says `what` instead of the temporary path and the command's flag."""
  with tempfile.TemporaryDirectory(prefix="minr_app_") as tmp:
    path = os.path.join(tmp, "upload")
    with open(path, "wb") as f:
      f.write(data)
    try:
      return reader(path)
    except ConfigError as e:
      text = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e).replace(path, what))
      raise ConfigError(text.removeprefix(f"{flag}: ")) from None


def read_photo(data: bytes, name: str, max_side: int = MAX_SIDE) -> tuple[np.ndarray, list[str]]:
  """(uint8 [H, W, C], notes) of an uploaded image file, as `inpaint.read_image` reads it
  (EXIF orientation applied; grey, grey + alpha, RGB or RGBA); scaled down by area
  averaging, with a note, when a side is above max_side."""
  if not data:
    raise ConfigError(f"{name} is empty: no photo")
  photo = _read_file_bytes(data, inpaint_lib.read_image, name, "--images")
  notes = []
  h, w = photo.shape[:2]
  if max(h, w) > max_side:
    scale = max_side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = Image.fromarray(photo[..., 0] if photo.shape[-1] == 1 else photo)
    small = np.asarray(image.resize((nw, nh), Image.Resampling.BOX))
    photo = small[..., None] if small.ndim == 2 else small
    notes.append(
      f"{name} is {w}x{h}, above this page's limit of {max_side} pixels a side: "
      f"scaled down to {nw}x{nh}"
    )
  return photo, notes


def sample_photo(name: str) -> np.ndarray:
  """uint8 [H, W, 3] of one of scikit-image's bundled photos (SAMPLES)."""
  if name not in SAMPLES:
    raise ConfigError(f"no sample photo {name!r}: {', '.join(SAMPLES)}")
  import skimage.data  # noqa: PLC0415 (only when a sample is asked for)

  return np.asarray(getattr(skimage.data, name)())


# -------------------------------------------------------------- masks ---


def request_mask(spec, height: int, width: int, grid) -> np.ndarray:
  """bool [height, width] (True = hidden) of a page's mask: {"kind": "paint", "png": a
  data: URL (white = hidden)}, {"kind": "box", "box": "x0,y0,x1,y1"} or {"kind": "random",
  "ratio": R, "seed": N}. Boxes and random patches are `inpaint.parse_mask` texts drawn by
  `inpaint.photo_mask` (random on a grid() x grid() lattice, as the command does);
  `inpaint.check_mask` refuses a mask that hides nothing or everything."""
  if not isinstance(spec, dict):
    raise ConfigError("no mask: paint the hole, or pick a box or random patches")
  kind = spec.get("kind")
  if kind == "paint":
    data = _url_bytes(spec.get("png"), "the painted mask")
    mask = _read_file_bytes(data, inpaint_lib.read_mask_file, "the painted mask", "--mask")
  elif kind in ("box", "random"):
    if kind == "box":
      text = f"box:{str(spec.get('box', '')).strip()}"
    else:
      ratio, seed = (str(spec.get(k, "")).strip() for k in ("ratio", "seed"))
      if ":" in ratio + seed:
        raise ConfigError(f"random patches: ratio {ratio!r} and seed {seed!r} must be numbers")
      text = f"random:{ratio}:seed={seed}"
    arg = inpaint_lib.parse_mask(text)
    if arg.kind != ("box" if kind == "box" else "strategy"):
      raise ConfigError(f"{text!r} is not a box x0,y0,x1,y1")
    mask = inpaint_lib.photo_mask(arg, height, width, 0, grid() if kind == "random" else 8)
  else:
    raise ConfigError(f"unknown mask kind {kind!r}: paint, box or random")
  return inpaint_lib.check_mask(mask, height, width, "the photo")


def mask_png(mask: np.ndarray) -> str:
  """A data: URL of the mask as white where hidden, transparent elsewhere (the page's overlay)."""
  alpha = np.asarray(mask, bool).astype(np.uint8) * 255
  return png_url(np.stack([np.full_like(alpha, 255), alpha], axis=-1))


# ------------------------------------------------------------ results ---


def result_columns(result) -> list[tuple[str, np.ndarray]]:
  """[(key, RGB fill [H, W, 3])]: each baseline the result scores (every key of
  result.psnr but 'minr', in its order), then MINR. A baseline's image is the result's
  field of that name (interpolation, mean_fill) or its entry in a `baselines` mapping,
  so a baseline the library adds to its results becomes a column with no change here."""
  table = getattr(result, "baselines", None) or {}
  columns = []
  for key in result.psnr:
    if key == "minr":
      continue
    image = getattr(result, key, None)
    image = table.get(key) if image is None and isinstance(table, dict) else image
    if image is not None:
      columns.append((key, np.asarray(image)))
  return [*columns, ("minr", np.asarray(result.minr))]


def _score(value: float):
  return float(value) if np.isfinite(value) else "inf"  # JSON has no infinity


def _filename(name: str) -> str:
  stem = os.path.splitext(os.path.basename(str(name or "photo")))[0]
  return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', stem).strip('._') or 'photo'}_filled.png"


# ---------------------------------------------------------------- app ---


class App:
  """The page's state: the offered checkpoints and the loaded ones. Requests keep their own
  data; one lock serialises loading and model calls (JAX and the baselines use the cores)."""

  def __init__(self, workdirs: list[str], max_side: int = MAX_SIDE):
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 8:
      raise ConfigError(f"--max_side={max_side!r} must be an integer of at least 8")
    self.workdirs = list(dict.fromkeys(str(w) for w in workdirs))
    self.max_side = max_side
    self._models = {}
    self._lock = threading.RLock()

  def model(self, name: str):
    """The loaded model of an offered checkpoint (loaded once); the library's ConfigError
    (one line) when it does not load."""
    if name not in self.workdirs:
      raise ConfigError(
        f"checkpoint {name!r} is not offered here: start the app with --workdir={name}"
      )
    with self._lock:
      if name not in self._models:
        try:
          self._models[name] = minr_jax.load(name)
        except ConfigError:
          raise
        except Exception as e:  # noqa: BLE001 (orbax and the file system raise many types)
          raise ConfigError(f"{name}: cannot load it ({type(e).__name__}: {e})") from None
      return self._models[name]

  def info(self) -> dict:
    return {
      "checkpoints": [{"name": w, "label": _label(w)} for w in self.workdirs],
      "samples": list(SAMPLES),
      "max_side": self.max_side,
      "max_upload_mb": MAX_UPLOAD // 2**20,
    }

  def _photo(self, photo: np.ndarray, notes: list[str], name: str) -> dict:
    h, w = photo.shape[:2]
    return {"png": png_url(photo), "width": w, "height": h, "name": name, "notes": notes}

  def upload(self, data: bytes, name: str) -> dict:
    return self._photo(*read_photo(data, name, self.max_side), name)

  def sample(self, name: str) -> dict:
    photo = sample_photo(name)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    return self._photo(*read_photo(buffer.getvalue(), f"{name}.png", self.max_side), name)

  def _request_photo(self, request: dict) -> tuple[np.ndarray, list[str], str]:
    name = str(request.get("name") or "photo")
    data = _url_bytes(request.get("photo"), "the photo")
    photo, notes = read_photo(data, name, self.max_side)
    return photo, notes, name

  def _checkpoint(self, request: dict) -> str:
    name = request.get("checkpoint")
    if not name:
      raise ConfigError("no checkpoint chosen")
    return str(name)

  def preview(self, request: dict) -> dict:
    """The mask a box or random-patch choice gives a photo of the request's size."""
    try:
      width, height = int(request["width"]), int(request["height"])
    except (KeyError, TypeError, ValueError):
      raise ConfigError("the mask preview needs the photo's width and height") from None
    if not (0 < width <= self.max_side and 0 < height <= self.max_side):
      raise ConfigError(f"the photo's size {width}x{height} is out of range")
    grid = lambda: int(self.model(self._checkpoint(request)).config.mask_grid)
    mask = request_mask(request.get("mask"), height, width, grid)
    return {"png": mask_png(mask), "hidden_fraction": float(mask.mean())}

  def fill(self, request: dict) -> dict:
    """Inpaints the request's photo under its mask with its checkpoint (`inpaint.inpaint`):
    every column's image and hidden-pixel PSNR, and the filled PNG."""
    photo, notes, name = self._request_photo(request)
    h, w = photo.shape[:2]
    checkpoint = self._checkpoint(request)
    with self._lock:
      model = self.model(checkpoint)
      mask = request_mask(request.get("mask"), h, w, lambda: int(model.config.mask_grid))
      start = time.monotonic()
      result = inpaint_lib.inpaint(model, photo, mask)
      seconds = time.monotonic() - start
      step = model.step
    hidden = result.mask[..., None]
    columns = [{"key": "masked", "title": "masked input", "psnr": None}]
    columns[0]["png"] = png_url(np.where(hidden, 0.0, result.photo))
    for key, image in result_columns(result):
      title = TITLES.get(key, key.replace("_", " "))
      columns.append({"key": key, "title": title, "psnr": _score(result.psnr[key])})
      columns[-1]["png"] = png_url(image)
    columns.append({"key": "photo", "title": "photo (the truth)", "psnr": None})
    columns[-1]["png"] = png_url(result.photo)
    return {
      "checkpoint": _label(checkpoint),
      "step": step,
      "width": w,
      "height": h,
      "hidden_fraction": float(result.mask.mean()),
      "seconds": round(seconds, 2),
      "notes": notes,
      "columns": columns,
      "filled": png_url(result.filled),
      "filename": _filename(name),
    }


# --------------------------------------------------------------- http ---


SECURITY_HEADERS = {
  # The page may talk to its own server only: no other host is reachable from it.
  "Content-Security-Policy": (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'"
  ),
  "Referrer-Policy": "no-referrer",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-store",
}


class Handler(BaseHTTPRequestHandler):
  """GET / (the page), /api/info, /api/sample/NAME; POST /api/photo (an image file's
  bytes), /api/mask and /api/inpaint (JSON). Errors: JSON {"error": one line}."""

  server_version = "minr-app"

  def log_message(self, format, *args):  # noqa: A002 (the base class's name)
    pass  # quiet: errors are answered in the page; unexpected ones print a traceback

  def _send(self, status: int, body: bytes, content_type: str) -> None:
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    for key, value in SECURITY_HEADERS.items():
      self.send_header(key, value)
    self.end_headers()
    self.wfile.write(body)

  def _json(self, status: int, payload: dict) -> None:
    self._send(status, json.dumps(payload).encode(), "application/json")

  def _answer(self, work) -> None:
    try:
      self._json(200, work())
    except ConfigError as e:
      self._json(400, {"error": _one_line(e)})
    except Exception as e:  # noqa: BLE001 (the server stays up; the page shows the line)
      traceback.print_exc()
      self._json(500, {"error": _one_line(f"internal error: {type(e).__name__}: {e}")})

  def do_GET(self):  # noqa: N802 (BaseHTTPRequestHandler's name)
    app: App = self.server.app
    path = urllib.parse.urlsplit(self.path).path
    if path in ("/", "/index.html"):
      self._send(200, PAGE.encode(), "text/html; charset=utf-8")
    elif path == "/api/info":
      self._answer(app.info)
    elif path.startswith("/api/sample/"):
      self._answer(lambda: app.sample(path.rsplit("/", 1)[1]))
    elif path == "/favicon.ico":
      self._send(204, b"", "image/x-icon")
    else:
      self._json(404, {"error": f"no page {path}"})

  def do_POST(self):  # noqa: N802
    app: App = self.server.app
    path = urllib.parse.urlsplit(self.path).path
    try:
      length = int(self.headers.get("Content-Length") or 0)
    except ValueError:
      length = -1
    if length < 0 or length > MAX_UPLOAD:
      self.close_connection = True
      return self._json(
        413, {"error": f"the request is over this page's limit of {MAX_UPLOAD // 2**20} MB"}
      )
    body = self.rfile.read(length)
    if path == "/api/photo":
      name = urllib.parse.unquote(self.headers.get("X-File-Name") or "photo")
      return self._answer(lambda: app.upload(body, os.path.basename(name) or "photo"))
    routes = {"/api/mask": app.preview, "/api/inpaint": app.fill}
    if path not in routes:
      return self._json(404, {"error": f"no API {path}"})

    def work():
      try:
        request = json.loads(body)
      except ValueError:
        raise ConfigError("the request is not JSON") from None
      if not isinstance(request, dict):
        raise ConfigError("the request is not a JSON object")
      return routes[path](request)

    self._answer(work)


class Server:
  """A running app: `url`, `app` (its App), `close()`."""

  def __init__(self, app: App, host: str, port: int):
    try:
      self.httpd = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
      raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    self.httpd.daemon_threads = True
    self.httpd.app = app
    self.app = app
    self.host, self.port = host, self.httpd.server_address[1]
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    self.url = f"http://{shown}:{self.port}/"
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def close(self) -> None:
    self.httpd.shutdown()
    self.httpd.server_close()


def start(
  workdirs: list[str],
  host: str = "127.0.0.1",
  port: int = 0,
  max_side: int = MAX_SIDE,
  preload: bool = True,
) -> Server:
  """Serves the page in a background thread (port 0: a free one) and returns the Server.

  preload loads the first checkpoint now (so the first fill only compiles); if it does not
  load, its one-line error is printed and the page shows it when it is chosen.
  """
  app = App(workdirs, max_side)
  if not app.workdirs:
    raise ConfigError("no checkpoint: give --workdir (a workdir or gs:// path)")
  if preload:
    try:
      app.model(app.workdirs[0])
    except ConfigError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
  return Server(app, host, port)


def show_inline(server: Server, height: int = 1000) -> bool:
  """In Colab: the page in the cell's output (Colab proxies the kernel's port) -> True.
  Elsewhere nothing is shown -> False (open server.url in a browser)."""
  try:
    from google.colab import output  # noqa: PLC0415 (there only in Colab)
  except ImportError:
    return False
  output.serve_kernel_port_as_iframe(server.port, height=str(height))
  return True


def main() -> None:
  from absl import flags  # noqa: PLC0415 (flags defined only when run as a command)

  flags.DEFINE_multi_string(
    "workdir",
    None,
    "A checkpoint to offer (a workdir, <workdir>/checkpoints/<step> or gs:// path); "
    "repeatable. The first is loaded at start.",
  )
  flags.DEFINE_boolean(
    "shipped", True, "Also offer the repository's pretrained/photos64 and pretrained/celeba64."
  )
  flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0: every interface).")
  flags.DEFINE_integer(
    "port", 7860, "Port to serve on; 0: a free one.", lower_bound=0, upper_bound=65535
  )
  flags.DEFINE_integer(
    "max_side",
    MAX_SIDE,
    "A photo with a longer side is scaled down to this many pixels (>= 1).",
    lower_bound=1,
  )
  f = flags.FLAGS

  def body(_):
    workdirs = list(f.workdir or []) + (shipped_checkpoints() if f.shipped else [])
    if f.port < 0 or f.port > 65535:
      raise ConfigError(f"--port={f.port} must be in 0..65535")
    server = start(workdirs, f.host, f.port, f.max_side)
    print(f"MINR app: {server.url} (Ctrl+C stops it)", flush=True)
    show_inline(server)
    try:
      server.thread.join()
    except KeyboardInterrupt:
      server.close()

  cli.run(body)


# --------------------------------------------------------------- page ---

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MINR inpainting</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 1em 1.5em; color: #222; }
h1 { font-size: 1.35em; margin: 0 0 .2em; }
.lead { margin: 0 0 .8em; color: #555; max-width: 62em; }
.row { margin: .35em 0; }
.row > b { display: inline-block; width: 6.5em; }
button { font: inherit; padding: .15em .7em; }
#run { font-weight: bold; padding: .3em 1.2em; }
#status { margin-left: .8em; }
#status.error { color: #b00020; font-weight: bold; }
#stage { position: relative; display: inline-block; margin: .6em 0; background: #eee; }
#stage canvas { display: block; }
#overlay { position: absolute; left: 0; top: 0; width: 100%; height: 100%; cursor: crosshair;
  touch-action: none; }
.pixelated { image-rendering: pixelated; }
#columns { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; text-align: center; }
figure img { display: block; border: 1px solid #ccc; }
figcaption { font-size: .9em; margin-top: .2em; }
.psnr { font-weight: bold; display: block; }
figure.best .psnr { color: #0a6b2b; }
.hint { color: #666; font-size: .9em; }
</style></head>
<body>
<h1>MINR: fill a hole in a photo</h1>
<p class="lead">Choose a photo, paint the hole (or pick a box or random patches) and run:
MINR's fill beside the classical inpainters, each with its PSNR on the hidden pixels (the
photo's true pixels are known, only hidden by this page). Everything runs on this machine.</p>
<div class="row"><b>Photo</b><input type="file" id="file" accept="image/*">
  <span class="hint">or a sample:</span> <span id="samples"></span></div>
<div class="row"><b>Checkpoint</b><select id="checkpoint"></select></div>
<div class="row"><b>Hole</b>
  <label><input type="radio" name="mode" value="paint" checked> paint</label>
  <label><input type="radio" name="mode" value="box"> box</label>
  <label><input type="radio" name="mode" value="random"> random patches</label></div>
<div class="row" id="paint-options"><b></b>brush
  <input type="range" id="brush" min="1" max="64" value="12"> <span id="brush-size">12</span> px
  <button id="clear">clear</button></div>
<div class="row" id="box-options" hidden><b></b>box x0,y0,x1,y1
  <input id="box" value="0.3,0.3,0.7,0.7" size="22">
  <span class="hint">pixels, or fractions with a point</span></div>
<div class="row" id="random-options" hidden><b></b>ratio
  <input type="number" id="ratio" min="0.05" max="1" step="0.05" value="0.5">
  seed <input type="number" id="seed" min="0" step="1" value="0">
  <span class="hint">patches of the checkpoint's mask grid</span></div>
<div class="row"><b></b><button id="run" disabled>Fill the hole</button>
  <span id="status" role="status"></span></div>
<div id="stage"><canvas id="photo" width="0" height="0"></canvas>
  <canvas id="overlay"></canvas></div>
<section id="results" hidden data-runs="0">
  <p id="summary"></p>
  <div id="columns"></div>
  <p><a id="download" href="#" download="filled.png">Download the filled PNG</a>
    <span class="hint">(the photo's size and channels; visible pixels unchanged)</span></p>
</section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const paintMask = document.createElement("canvas");  // white strokes = hidden, photo size
let photo = null;     // {png, width, height, name, notes}
let preview = null;   // the server's box / random mask (an Image), or null
let previewSeq = 0, last = null, scale = 1;

function say(text, error) {
  $("status").textContent = text || ""; $("status").className = error ? "error" : "";
}
function mode() { return document.querySelector("input[name=mode]:checked").value; }

async function api(path, options) {
  let response, body;
  try { response = await fetch(path, options); }
  catch (e) { throw new Error("the server does not answer (" + e.message + ")"); }
  try { body = await response.json(); }
  catch (e) { throw new Error("the server answered " + response.status + " without JSON"); }
  if (!response.ok || body.error) throw new Error(body.error || ("HTTP " + response.status));
  return body;
}
function post(path, payload) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"},
                    body: JSON.stringify(payload)});
}

function maskSpec() {
  const m = mode();
  if (m === "paint") {
    const out = document.createElement("canvas");
    out.width = photo.width; out.height = photo.height;
    const c = out.getContext("2d");
    c.fillStyle = "#000"; c.fillRect(0, 0, out.width, out.height); c.drawImage(paintMask, 0, 0);
    return {kind: "paint", png: out.toDataURL("image/png")};
  }
  if (m === "box") return {kind: "box", box: $("box").value};
  return {kind: "random", ratio: $("ratio").value, seed: $("seed").value};
}

function drawOverlay() {
  const o = $("overlay"), c = o.getContext("2d");
  c.globalCompositeOperation = "source-over";
  c.clearRect(0, 0, o.width, o.height);
  const source = mode() === "paint" ? paintMask : preview;
  if (!photo || !source) return;
  c.drawImage(source, 0, 0);
  c.globalCompositeOperation = "source-in";
  c.fillStyle = "rgba(255, 0, 80, 0.6)"; c.fillRect(0, 0, o.width, o.height);
  c.globalCompositeOperation = "source-over";
}

async function updatePreview() {
  const seq = ++previewSeq;
  preview = null; drawOverlay();
  if (!photo || mode() === "paint") return;
  try {
    const r = await post("api/mask", {width: photo.width, height: photo.height,
                                      checkpoint: $("checkpoint").value, mask: maskSpec()});
    const img = new Image();
    img.onload = () => {
      if (seq !== previewSeq) return;
      preview = img; drawOverlay();
      say(Math.round(100 * r.hidden_fraction) + "% of the pixels hidden");
    };
    img.src = r.png;
  } catch (e) { if (seq === previewSeq) say(e.message, true); }
}

async function setPhoto(body) {
  const img = new Image();
  await new Promise((ok, bad) => {
    img.onload = ok; img.onerror = () => bad(new Error("the browser cannot show this photo"));
    img.src = body.png;
  });
  photo = body;
  const w = body.width, h = body.height;
  scale = Math.max(1, Math.min(4, Math.floor(384 / Math.max(w, h))));
  for (const c of [$("photo"), $("overlay"), paintMask]) { c.width = w; c.height = h; }
  $("photo").style.width = (w * scale) + "px"; $("photo").style.maxWidth = "calc(100vw - 3em)";
  $("photo").classList.toggle("pixelated", scale > 1);
  $("photo").getContext("2d").drawImage(img, 0, 0);
  const brush = Math.max(2, Math.round(Math.min(w, h) / 8));
  $("brush").max = Math.max(8, Math.round(Math.max(w, h) / 2));
  $("brush").value = brush; $("brush-size").textContent = brush;
  $("results").hidden = true; $("run").disabled = false;
  say(body.notes.length ? body.notes.join(" ") : body.name + ": " + w + "x" + h + " pixels");
  await updatePreview();
}

function toPhoto(e) {
  const r = $("overlay").getBoundingClientRect();
  return [(e.clientX - r.left) * photo.width / r.width,
          (e.clientY - r.top) * photo.height / r.height];
}
function stroke(from, to) {
  const c = paintMask.getContext("2d"), width = Number($("brush").value);
  c.strokeStyle = c.fillStyle = "#fff"; c.lineWidth = width; c.lineCap = c.lineJoin = "round";
  c.beginPath(); c.arc(to[0], to[1], width / 2, 0, 2 * Math.PI); c.fill();
  c.beginPath(); c.moveTo(from[0], from[1]); c.lineTo(to[0], to[1]); c.stroke();
}
$("overlay").addEventListener("pointerdown", (e) => {
  if (!photo || mode() !== "paint") return;
  $("overlay").setPointerCapture(e.pointerId);
  last = toPhoto(e); stroke(last, last); drawOverlay(); e.preventDefault();
});
$("overlay").addEventListener("pointermove", (e) => {
  if (last === null) return;
  const p = toPhoto(e); stroke(last, p); last = p; drawOverlay();
});
for (const ev of ["pointerup", "pointercancel"]) {
  $("overlay").addEventListener(ev, () => { last = null; });
}

$("brush").addEventListener("input", () => { $("brush-size").textContent = $("brush").value; });
$("clear").addEventListener("click", () => {
  paintMask.getContext("2d").clearRect(0, 0, paintMask.width, paintMask.height); drawOverlay();
});
for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", () => {
  for (const m of ["paint", "box", "random"]) $(m + "-options").hidden = mode() !== m;
  $("overlay").style.cursor = mode() === "paint" ? "crosshair" : "default";
  say(""); updatePreview();
});
for (const id of ["box", "ratio", "seed", "checkpoint"]) {
  $(id).addEventListener("change", updatePreview);
}

$("file").addEventListener("change", async () => {
  const f = $("file").files[0];
  if (!f) return;
  say("reading " + f.name + " ...");
  try {
    await setPhoto(await api("api/photo", {method: "POST", body: f, headers: {
      "Content-Type": "application/octet-stream", "X-File-Name": encodeURIComponent(f.name)}}));
  } catch (e) { say(e.message, true); }
});

function showResult(r) {
  const columns = $("columns");
  columns.replaceChildren();
  const value = (c) => c.psnr === "inf" ? Infinity : c.psnr;
  const best = Math.max(...r.columns.filter((c) => c.psnr !== null).map(value));
  const room = Math.floor((document.body.clientWidth - 12 * r.columns.length) / r.columns.length);
  const width = Math.max(Math.min(r.width * scale, room), Math.min(r.width, 160));  // one row
  for (const c of r.columns) {
    const figure = document.createElement("figure"), img = document.createElement("img");
    const caption = document.createElement("figcaption");
    figure.dataset.key = c.key;
    img.src = c.png; img.alt = c.title; img.style.width = width + "px";
    if (scale > 1) img.classList.add("pixelated");
    caption.textContent = c.title;
    if (c.psnr !== null) {
      const span = document.createElement("span");
      span.className = "psnr"; span.dataset.psnr = String(c.psnr);
      span.textContent = (value(c) === Infinity ? "exact" : value(c).toFixed(2) + " dB");
      span.title = "PSNR on the hidden pixels";
      caption.appendChild(span);
      if (value(c) === best) figure.classList.add("best");
    }
    figure.append(img, caption);
    columns.appendChild(figure);
  }
  $("summary").textContent = r.checkpoint + " (step " + r.step + ") on " + r.width + "x" +
    r.height + " pixels, " + (100 * r.hidden_fraction).toFixed(1) + "% hidden, in " + r.seconds +
    " s. PSNR in dB on the hidden pixels, against the photo.";
  $("download").href = r.filled; $("download").download = r.filename;
  $("results").hidden = false;
  $("results").dataset.runs = String(Number($("results").dataset.runs) + 1);
}

$("run").addEventListener("click", async () => {
  if (!photo) return;
  $("run").disabled = true;
  say("filling with " + $("checkpoint").selectedOptions[0].textContent +
      " (the first run of a size compiles, a few seconds) ...");
  try {
    const r = await post("api/inpaint", {photo: photo.png, name: photo.name,
                                         checkpoint: $("checkpoint").value, mask: maskSpec()});
    showResult(r);
    say(r.notes.join(" ") || "done");
  } catch (e) { say(e.message, true); }
  finally { $("run").disabled = false; }
});

(async () => {
  try {
    const info = await api("api/info");
    for (const c of info.checkpoints) $("checkpoint").add(new Option(c.label, c.name));
    for (const name of info.samples) {
      const b = document.createElement("button");
      b.textContent = name; b.dataset.sample = name;
      b.addEventListener("click", async () => {
        say("loading " + name + " ...");
        try { await setPhoto(await api("api/sample/" + name)); } catch (e) { say(e.message, true); }
      });
      $("samples").append(b, " ");
    }
    say("choose a photo (at most " + info.max_side +
        " pixels a side; larger ones are scaled down)");
  } catch (e) { say(e.message, true); }
})();
</script>
</body></html>
"""


if __name__ == "__main__":
  main()
