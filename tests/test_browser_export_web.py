"""The web page export in headless Chromium, with no internet: the page's answers are `tl predict`'s.

A Lite0 run trained on a dataset made with ``tl.data.made`` (8 photos each of a cat and of a
cup of coffee: crops of scikit-image's pictures) is exported as a web bundle, unzipped and
served by a plain static server (``http.server`` in a thread). The browser's requests for LiteRT.js on the
CDN are answered from the npm package that ``npm ci`` installs from the committed
``package-lock.json`` (``node_modules/``), with the content types a CDN sends; every other
request off this machine is refused. At 390 px wide, photos picked through the page's file input
(the run's test photos, other crops of both pictures, two photos of neither, noise and a blank)
get the same top-1 as ``tl predict`` and probabilities within ``TOLERANCE``; each shows
"none of my classes" exactly when the run's export rule (its confidence cut) says so. A photo
taken with chromium's fake camera is classified too. With the CDN unreachable the page says so
in one sentence.

Screenshot: ``<TL_TEST_OUTPUT>/screenshots/web-export-phone.png``, the page at 390 px with the
photos classified.
"""

import contextlib
import functools
import http.server
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl import cli, datasets, export, export_web
from tl.data import made

from conftest import LITE0_RUN, REPO, photo, photos, tiny_config, train_run
from test_browser_data import FAKE_CAMERA, OVERFLOW
from test_e2e_browser import CHROMIUM, CHROMIUM_ARGS, OUTPUT, _browser_or_skip, browser_test

TOLERANCE = 0.02  # the bound on |page - tl predict| per class
NODE_MODULES = REPO / "node_modules"
CONTENT_TYPES = {".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
                 ".map": "application/json"}
PHONE = {"width": 390, "height": 844}


@contextlib.contextmanager
def static_server(folder):
    """``http://127.0.0.1:<port>/`` serving ``folder``, as any static host would."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def from_node_modules(route):
    """Answer a CDN request with the npm package's file, as jsDelivr would."""
    url = route.request.url
    for prefix, folder in export_web.cdn_files().items():
        if url.startswith(prefix):
            path = NODE_MODULES / folder / url[len(prefix):].split("?")[0]
            if path.is_file():
                route.fulfill(status=200, body=path.read_bytes(), headers={
                    "Content-Type": CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
                    "Access-Control-Allow-Origin": "*"})
                return
    route.fulfill(status=404, body="not in node_modules")


def offline(page, cdn) -> list:
    """Route the CDN (``cdn``: a handler) and refuse anything else off this machine; returns
    the URLs refused."""
    refused = []

    def elsewhere(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "blob:", "data:")):
            route.continue_()
        elif url.startswith(export_web.CDN):
            cdn(route)
        else:
            refused.append(url)
            route.abort()

    page.route("**/*", elsewhere)
    return refused


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """``(run, folder of the unzipped bundle, photo paths)``: a made dataset's run."""
    _browser_or_skip()
    if not (NODE_MODULES / "@litertjs" / "core" / "package.json").is_file():
        pytest.fail("node_modules/@litertjs/core is missing: run `npm ci` in the repository root")
    root = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_DATA_DIR", str(root / "data"))
        made.create_dataset("Cat or coffee")
        made.add_photos("Cat or coffee", "cat", photos(8, "chelsea"))
        made.add_photos("Cat or coffee", "coffee", photos(8, "coffee"))
        run = train_run(root / "runs", tiny_config(**{**LITE0_RUN, "dataset": "data:Cat or coffee",
                                                      "samples_per_class": 0, "name": "Cat or coffee"}))
        assert run.status()["status"] == "done", run.status()
        paths = write_photos(run, root / "photos")
        zipped = export.export(run, "web", root)
        with zipfile.ZipFile(zipped) as archive:
            archive.extractall(root / "site")
        yield run, root / "site" / f"{run.id}-web", paths


def write_photos(run, folder) -> list:
    """The run's test photos, other crops of both pictures, two photos of neither class (the
    page shrinks all the photos) and three images of nothing (colour noise, grey noise, a
    blank), as PNG: lossless, so both sides read the same pixels. The page shows the last
    picked on top, so the last three make its screenshot: grey noise, a coffee, the cat."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = {"noise": rng.integers(0, 256, (180, 260, 3)), "blank": np.full((180, 260, 3), 255)}
    for i, picture in ((0, "astronaut"), (0, "rocket"), (33, "coffee"), (33, "chelsea")):
        images[f"{picture}-{i}"] = np.asarray(Image.open(io.BytesIO(photo(i, picture, "PNG"))))
    data = datasets.load(run.config)
    images.update({f"test-{int(i)}": data.reader(int(i)) for i in data.splits["test"]})
    images["grey-noise"] = np.repeat(np.clip(rng.normal(128, 40, (180, 260, 1)), 0, 255), 3, axis=2)
    for i, picture in ((20, "coffee"), (20, "chelsea")):
        images[f"{picture}-{i}"] = np.asarray(Image.open(io.BytesIO(photo(i, picture, "PNG"))))
    paths = []
    for name, image in images.items():
        paths.append(str(folder / f"{name}.png"))
        Image.fromarray(np.asarray(image).astype(np.uint8)).save(paths[-1])
    return paths


def predicted(run, paths, capsys) -> dict:
    """``{file name: {class: probability}}`` from ``tl predict --json``."""
    capsys.readouterr()
    assert cli.main(["predict", run.id, *paths, "--json", "--top", str(len(run.labels)),
                     "--runs-dir", str(run.path.parent)]) == 0
    found = {}
    for line in capsys.readouterr().out.splitlines():
        row = json.loads(line)
        found[row["file"].rsplit("/", 1)[-1]] = {each["label"]: each["score"] for each in row["transfer"]}
    return found


def open_page(browser, url, cdn):
    context = browser.new_context(viewport=PHONE, permissions=["camera"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    refused = offline(page, cdn)
    page.goto(url + "index.html")
    return page, refused


@browser_test
def test_the_page_answers_as_tl_predict_does_on_a_phone_without_internet(bundle, capsys):
    run, site, paths = bundle
    expected = predicted(run, paths, capsys)
    cut = run.metrics["novelty"]["confidence_threshold"]
    sync_playwright = _browser_or_skip()
    with static_server(site) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *FAKE_CAMERA])
        try:
            page, refused = open_page(browser, url, from_node_modules)
            started = time.monotonic()
            page.wait_for_selector('body[data-ready="true"]')
            load_seconds = time.monotonic() - started
            page.locator('[data-testid="photos"]').set_input_files(paths)
            page.wait_for_selector(f'body[data-done="{len(paths)}"]')
            cards = page.locator('[data-testid="result"]')
            shown = {}
            for i in range(cards.count()):
                card = cards.nth(i)
                shown[card.get_attribute("data-file")] = {
                    "probs": json.loads(card.get_attribute("data-probs")), "ms": float(card.get_attribute("data-ms")),
                    "top1": card.locator('[data-testid="top-1"]').inner_text(),
                    "unknown": card.locator('[data-testid="unknown"]').count() == 1}
            assert page.evaluate(OVERFLOW) == []
            OUTPUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUTPUT / "web-export-phone.png"), full_page=True)

            # The camera (chromium's fake one): a photo taken is classified like a picked one.
            page.get_by_role("button", name="Use the camera").click()
            page.get_by_role("button", name="Take photo").wait_for()
            page.wait_for_function("document.getElementById('video').videoWidth > 0")
            page.get_by_role("button", name="Take photo").click()
            taken = f'[data-testid="result"][data-file="Camera photo {len(paths) + 1}"]'
            page.wait_for_selector(taken)
            assert page.locator(f'{taken} [data-testid="top-1"]').inner_text() in run.labels
            assert page.evaluate(OVERFLOW) == []

            # A file that is not an image: one sentence naming it, the answers stay.
            broken = Path(paths[0]).with_name("broken.jpg")
            broken.write_bytes(b"not a photo")
            page.locator('[data-testid="photos"]').set_input_files([str(broken)])
            page.wait_for_selector(f'body[data-done="{len(paths) + 1}"]')
            assert page.get_by_test_id("status").inner_text() == (
                "broken.jpg: not an image this browser can read; try a JPEG or PNG.")
            assert page.locator('[data-testid="result"]').count() == len(paths) + 1
            assert refused == []

            # The library unreachable (an offline phone): one sentence, nothing to click.
            down, _ = open_page(browser, url, lambda route: route.abort())
            down.wait_for_selector('body[data-library="missing"]')
            assert down.get_by_test_id("status").inner_text().startswith(
                "The LiteRT.js library could not be loaded (no internet, or its CDN is blocked)")
            assert down.locator('[data-testid="photos"]').is_disabled()
        finally:
            browser.close()

    assert sorted(shown) == sorted(expected)
    gaps = []
    for name, answer in shown.items():
        want = expected[name]
        probs = dict(zip(run.labels, answer["probs"]))
        top = max(want, key=want.get)
        assert answer["top1"] == top, (name, answer, want)
        gaps += [abs(probs[label] - want[label]) for label in run.labels]
        assert answer["unknown"] == (want[top] < cut), (name, want, cut)
    print(f"\nweb page vs tl predict on {len(shown)} photos: max |diff| {max(gaps):.2e}, median "
          f"{float(np.median(gaps)):.2e}; {np.median([a['ms'] for a in shown.values()]):.0f} ms/photo "
          f"(median), model and library loaded in {load_seconds:.1f} s; unknown: "
          f"{sorted(name for name, answer in shown.items() if answer['unknown'])} (cut {cut:.3f})")
    assert max(gaps) <= TOLERANCE
    assert any(answer["unknown"] for answer in shown.values())  # the notice was drawn, not only absent
