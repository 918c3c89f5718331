"""The web bundle: a static page that runs a run's model in any browser, with no server.

A zip holding one folder, ``<run id>-web/``:

- ``model.tflite``: the run's model with a fixed float32 ``(1, S, S, 3)`` RGB 0-255 input (``S``
  the run's ``image_size``) and no resize inside, float32 probabilities out (the calibration
  temperature is already folded into the last layer). :mod:`tl.export` converts it.
- ``metadata.json``: the labels, what the page must do to a photo, the rule for "none of my
  classes" (confidence only: a file that outputs probabilities cannot measure the app's
  feature-space distance), versions, run id and date.
- ``index.html``: pick photos or use the camera; top-k bars; "none of my classes". It loads
  LiteRT.js (:data:`LITERT_VERSION`, its wasm build: no threads, so the page needs no
  cross-origin isolation) from jsDelivr through an import map of exact-version files.
- ``README.md``: how to host it, and how to vendor the library for offline use.

The page resizes a photo as the app's model does (bilinear with anti-aliasing, stretched to a
square, no crop), computed in JavaScript from the full-size pixels rather than by the canvas,
whose shrinking differs between browsers.

Plain Python; builds bytes from the converted model and the run folder.
"""

import datetime
import hashlib
import io
import json
import platform
import time
import zipfile
from pathlib import Path

LITERT_VERSION = "2.5.3"  # @litertjs/core, as pinned in package.json and package-lock.json
WASM_UTILS_VERSION = "2.5.3"  # @litertjs/wasm-utils, which core's dist/index.js imports by name
CDN = "https://cdn.jsdelivr.net/npm"
TOP_K = 5
PAGE = Path(__file__).with_name("web_page.html")
METADATA_FORMAT = 1


def library_urls() -> dict:
    """``{bare module name: exact-version URL}``: the page's import map."""
    return {"@litertjs/core": f"{CDN}/@litertjs/core@{LITERT_VERSION}/dist/index.js",
            "@litertjs/wasm-utils": f"{CDN}/@litertjs/wasm-utils@{WASM_UTILS_VERSION}/dist/index.js"}


def wasm_url() -> str:
    """The folder LiteRT.js loads its WebAssembly build from."""
    return f"{CDN}/@litertjs/core@{LITERT_VERSION}/wasm/"


def cdn_files() -> dict:
    """``{URL prefix: path under node_modules}``: where each CDN folder's files are in the
    npm package (the browser tests serve them from there; a host vendors them the same way)."""
    return {f"{CDN}/@litertjs/core@{LITERT_VERSION}/": "@litertjs/core/",
            f"{CDN}/@litertjs/wasm-utils@{WASM_UTILS_VERSION}/": "@litertjs/wasm-utils/"}


def metadata(run, model: bytes, quantize: str | None = None, now: datetime.datetime | None = None) -> dict:
    """What ``metadata.json`` says (see the module docstring)."""
    import keras
    import tensorflow as tf

    import tl

    cfg, metrics = run.config, run.metrics
    size = cfg.image_size
    calibration = metrics.get("calibration") or {}
    rule = metrics.get("novelty") or {}
    threshold = rule.get("confidence_threshold")
    dtype = "uint8" if quantize == "int8" else "float32"  # full integer: the converter made the input uint8
    return {
        "format": METADATA_FORMAT,
        "run_id": run.id,
        "name": cfg.name or run.id,
        "created": (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds"),
        "labels": list(run.labels),
        "model": {"file": "model.tflite", "bytes": len(model), "sha256": hashlib.sha256(model).hexdigest(),
                  "input": {"shape": [1, size, size, 3], "dtype": dtype, "range": [0, 255]},
                  "output": {"shape": [1, len(run.labels)], "dtype": "float32",
                             "meaning": "one probability per class, in the order of labels"},
                  "weights": {None: "float32", "float16": "float16", "dynamic": "8-bit (dynamic range)",
                              "int8": "8-bit, full integer"}[quantize],
                  "backbone": cfg.backbone, "strategy": cfg.strategy, "head": cfg.head,
                  "test_accuracy": metrics.get("test_accuracy")},
        "preprocessing": {
            "steps": ["decode the photo, applying its EXIF orientation",
                      "convert to RGB, 8 bits per channel (drop alpha)",
                      f"resize to {size}x{size} by stretching (no crop, aspect ratio not kept) with bilinear "
                      "interpolation and anti-aliasing (a triangle filter widened by the shrink factor), "
                      "as the app's model does",
                      ("pass the resized values as they are (not rounded: float32 0-255)" if dtype == "float32"
                       else "round to integers 0-255 (uint8)") + ", shape [1, height, width, 3], rows top to bottom",
                      "nothing else: the backbone's own normalisation is inside the model"],
            "size": [size, size], "resize": "bilinear, anti-aliased", "keep_aspect_ratio": False,
            "dtype": dtype, "range": [0, 255], "channels": "RGB"},
        "calibration": {"applied_inside_model": bool(calibration.get("applied")),
                        "temperature": calibration.get("temperature"), "source": calibration.get("source"),
                        "note": calibration.get("note") if not calibration.get("applied") else
                        "the temperature is already folded into the model's last layer: use the outputs as they are"},
        "none_of_my_classes": (
            {"rule": "top probability below threshold", "threshold": threshold,
             "pass_rate": rule.get("pass_rate"),
             "note": "confidence only: the app also measures how far a photo's features are from the training "
                     "photos, which a file giving probabilities cannot, so this rule catches fewer outsiders"}
            if threshold is not None else
            {"rule": None, "threshold": None, "note": rule.get("note") or "this run has no rule for photos of "
                                                                         "none of its classes"}),
        "top_k": min(TOP_K, len(run.labels)),
        "versions": {"transfer_learning_studio": tl.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "python": platform.python_version(),
                     "litertjs": LITERT_VERSION, "litertjs_wasm_utils": WASM_UTILS_VERSION},
    }


def page(meta: dict) -> str:
    """``index.html``: the page template with its title, import map and wasm folder."""
    import_map = json.dumps({"imports": library_urls()}, indent=2)
    title = _html_text(f"{meta['name']}: classify photos")
    return (PAGE.read_text()
            .replace("{{IMPORT_MAP}}", import_map)
            .replace("{{WASM_URL}}", wasm_url())
            .replace("{{LITERT_VERSION}}", LITERT_VERSION)
            .replace("{{TITLE}}", title))  # last: a run's name is the user's text


def readme(meta: dict) -> str:
    """``README.md``: what the bundle is, how to host it, how to vendor LiteRT.js."""
    size = meta["model"]["input"]["shape"][1]
    rule = meta["none_of_my_classes"]
    unknown = (f"A photo whose top probability is below {rule['threshold']:.4f} is shown as \"none of my "
               f"classes\" ({rule['pass_rate']:.0%} of held-out photos of the classes reach it); the guesses stay "
               "visible." if rule["threshold"] is not None else rule["note"] + ".")
    core, utils = f"@litertjs/core@{LITERT_VERSION}", f"@litertjs/wasm-utils@{WASM_UTILS_VERSION}"
    return f"""# {meta['name']}: a web page that classifies photos

Run `{meta['run_id']}` of Transfer Learning Studio ({meta['model']['backbone']}, {meta['model']['strategy']}),
{len(meta['labels'])} classes: {', '.join(meta['labels'])}. Built {meta['created']}.

Open the page, pick photos (or use the camera) and it shows each photo's top classes as bars.
Everything runs in the browser: no photo leaves the device. {unknown}

## Files

- `index.html`: the page.
- `model.tflite`: the model; one RGB image, {meta['model']['input']['dtype']} `[1, {size}, {size}, 3]` with values 0-255, in;
  one probability per class out (calibrated already). No resize inside: the page resizes.
- `metadata.json`: the labels in output order, what to do to a photo before the model, the rule for
  "none of my classes", versions.

## Host it

Any static web host serves it as it is: copy the folder's files (GitHub Pages, Netlify, Cloudflare
Pages, an S3 bucket, a university web folder, `python -m http.server` on your laptop). It needs no
server code and no special headers (LiteRT.js's single-threaded WebAssembly build needs no
cross-origin isolation). Opening `index.html` straight from disk (`file://`) does not work: browsers
refuse to load the model from a file page. The camera needs `https://` (or `localhost`); picking
photos works everywhere.

## Offline use: vendor the library

The page loads LiteRT.js {LITERT_VERSION} from jsDelivr (about 10 MB of WebAssembly, cached by the
browser after the first visit). Without internet, or to depend on no CDN, host those files beside
the page:

    npm pack {core} {utils}
    mkdir -p vendor/core vendor/wasm-utils
    tar -xzf litertjs-core-{LITERT_VERSION}.tgz -C vendor/core --strip-components=1
    tar -xzf litertjs-wasm-utils-{WASM_UTILS_VERSION}.tgz -C vendor/wasm-utils --strip-components=1

then, in `index.html`, point the import map and the wasm folder at them:

    "@litertjs/core": "./vendor/core/dist/index.js",
    "@litertjs/wasm-utils": "./vendor/wasm-utils/dist/index.js"
    const WASM_URL = "./vendor/core/wasm/";

Only `dist/` and `wasm/litert_wasm_internal.*` plus `wasm/litert_wasm_compat_internal.*` are needed.
Serve `.wasm` files as `application/wasm` (most hosts do).

If the library cannot be loaded (an offline phone), the page says so in one sentence.
"""


def bundle(run, model: bytes, quantize: str | None = None) -> bytes:
    """The zip's bytes: ``<run id>-web/`` with the page, the model, metadata and README."""
    meta = metadata(run, model, quantize)
    root = f"{run.id}-web"
    files = {"index.html": page(meta).encode(), "model.tflite": model,
             "metadata.json": (json.dumps(meta, indent=2) + "\n").encode(), "README.md": readme(meta).encode()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            entry = zipfile.ZipInfo(f"{root}/{name}", date_time=time.localtime()[:6])
            entry.external_attr = 0o644 << 16  # readable by a web server once extracted
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    return buffer.getvalue()


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
