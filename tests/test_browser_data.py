"""The Data page in headless Chromium: a dataset made on a phone (uploads and the camera),
trained on and classified live, a photo's answer added back to the dataset, the model
updated, and a pool of new photos ranked with one added in a tap (issue 32); and a dataset's photos surviving a reload and a new tab.

Chromium runs with a fake camera (``--use-fake-device-for-media-stream``: a green test
pattern with a running clock, so each photo differs) and the camera permission granted.
The uploaded photos are real ones: crops of scikit-image's cat (``chelsea``) and cup of
coffee (``coffee``), written as JPEGs.

At 390x844 every step is checked for horizontal overflow (the document does not scroll
sideways and no visible element's right edge is past 391 px), and the step's control
(Make dataset, Add class, the uploader's button, Take Photo before each tap) is checked to
be in the first screen.

Also checked: a class or dataset stays chosen while the counts in its label change (the
browser keeps the label it was last sent; ``ui.data_view._steady``), so each photo lands
in the class on screen.

Screenshots (``<TL_TEST_OUTPUT>/screenshots/``, the whole page drawn in a tall viewport):

- ``data-phone-1-new-dataset.png``: the Data page as first opened: "New dataset..." and
  its name form.
- ``data-phone-2-uploaded.png``: the first class, "Chelsea", with its 8 uploaded photos
  as thumbnails, and the advice to add a second class.
- ``data-phone-3-camera.png``: the second class, "camera", chosen, with the camera on.
- ``data-phone-4-camera-photos.png``: after four taps of "Take Photo": "camera (4)"
  still chosen, the last photo's "Added" message under the camera, four thumbnails.
- ``data-phone-5-removed.png``: after removing one photo of "Chelsea" (7 left).
- ``data-phone-6-trained.png``: the Train page with the run trained on the dataset at
  the defaults (efficientnet_lite0, ImageNet weights, feature_extraction): its results.
- ``data-phone-7-classify-camera.png``: Classify with that run, "Test it live with the
  camera" on and a photo taken: both heads' charts.
- ``data-phone-8-added.png``: the camera photo added to the class the model guessed, from
  its answer ("Add to class"): the dataset at a new version.
- ``data-phone-9-updated.png``: "Update the model" trained the same settings on that
  version: the new run's results with "What changed since run ...".
- ``data-phone-10-pool.png``: Classify's "Photos to add next" with three coffee photos
  ranked, each with a button per class.
- ``data-wide-1-first-class.png``: 1400x900, a new dataset with its first class
  ("Chelsea", 6 photos) uploaded.
- ``data-wide-2-reloaded.png``: the same page after a reload: every photo still there.
- ``data-wide-3-new-tab.png``: the dataset's ``?data=<id>`` link opened in a new tab.
- ``data-wide-4-two-classes.png``: the second class ("Coffee", 8) uploaded, then
  Chelsea's last two photos one upload at a time (8 and 8); "Train on this dataset"
  enabled.
- ``data-wide-5-train.png``: the Train page that button opens, with ``data:NAME`` chosen.
"""

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
import skimage.data
from PIL import Image

from tl import runs
from tl.data import made

from test_browser_newcomer import PHONE, WIDE, expect
from test_e2e_browser import (OUTPUT, TIMEOUT_MS, _browser_or_skip, browser_test, choose, drawn, serve, settle,
                              tall_screenshot)

FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
PHOTOS_PER_CLASS = 8
CAMERA_PHOTOS = 4


@pytest.fixture  # one per test, so that a rerun starts from a fresh runs folder
def app(tmp_path_factory):
    _browser_or_skip()
    root = tmp_path_factory.mktemp("data") / "runs"
    root.mkdir()
    with serve(root, extra_args=FAKE_CAMERA) as found:
        yield found


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """``{"cat": [paths], "coffee": [paths]}``: eight different crops of each photograph."""
    folder = tmp_path_factory.mktemp("photos")
    found = {}
    for name, image in (("cat", skimage.data.chelsea()), ("coffee", skimage.data.coffee())):
        height, width = image.shape[:2]
        paths = []
        for i in range(PHOTOS_PER_CLASS):
            side = int(min(height, width) * (0.6 + 0.05 * (i % 4)))
            top = (height - side) * (i % 3) // 2
            left = (width - side) * (i % 5) // 4
            path = folder / f"{name}-{i}.jpg"
            Image.fromarray(image[top:top + side, left:left + side]).save(path, quality=90)
            paths.append(str(path))
        found[name] = paths
    return found


# -- helpers ---------------------------------------------------------------------------

def page_at(app, viewport, camera: bool = False):
    context = app["browser"].new_context(viewport=viewport, permissions=["camera"] if camera else [])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def shot(page, name: str) -> None:
    """The whole page, in a 3,000 px tall viewport."""
    tall_screenshot(page, OUTPUT / f"data-{name}.png", 3000)


OVERFLOW = """() => {
    const width = document.documentElement.clientWidth, bad = [];
    if (document.documentElement.scrollWidth > width)
        bad.push(`the document is ${document.documentElement.scrollWidth} px wide`);
    for (const e of document.querySelectorAll('body *')) {
        const box = e.getBoundingClientRect(), style = getComputedStyle(e);
        if (box.width > 0 && box.height > 0 && style.visibility !== 'hidden' && box.right > width + 1)
            bad.push(`${e.tagName.toLowerCase()} ${e.getAttribute('data-testid') || e.className || ''} `
                     + `'${(e.innerText || '').trim().slice(0, 40)}' ends at ${Math.round(box.right)} px`);
    }
    return bad.slice(0, 10);
}"""


def no_overflow(page, step: str) -> None:
    """Nothing sticks out on the right. Polled for a few seconds: a camera that has just
    started draws its video at its natural size until its width is measured (1 s debounce)."""
    found = page.evaluate(OVERFLOW)
    for _ in range(20):
        if not found:
            return
        page.wait_for_timeout(500)
        found = page.evaluate(OVERFLOW)
    assert not found, f"{step}: wider than the {page.viewport_size['width']} px screen: {found}"


def to_top(page) -> None:
    page.evaluate("""() => new Promise(done => { document.querySelector('[data-testid=stMain]').scrollTo(0, 0);
        requestAnimationFrame(() => requestAnimationFrame(done)); })""")


def in_first_screen(page, locator, step: str, seconds: float = 20) -> None:
    """``locator`` is wholly visible without scrolling (the page scrolled to its top), once
    the page has settled: on a loaded CI machine a rerun's stale elements once stood above
    it for a moment (Take Photo measured at 2,711 px)."""
    deadline = time.time() + seconds
    limit = page.viewport_size["height"]
    while True:
        settle(page)
        to_top(page)
        box = locator.bounding_box()
        if box is not None and box["y"] >= 0 and box["y"] + box["height"] <= limit:
            return
        if time.time() > deadline:
            break
        page.wait_for_timeout(1000)
    assert box is not None, f"{step}: not on screen"
    shot(page, f"not-in-first-screen-{step}")
    raise AssertionError(f"{step}: the control spans {box['y']:.0f}-{box['y'] + box['height']:.0f} px, "
                         f"past the first {limit} px")


def card(page, index: int):
    return page.locator(f".st-key-data_card_{index}")


def thumbnails(page, index: int):
    return page.locator(f".st-key-data_grid_{index} img")


def has_photos(page, index: int, name: str, count: int) -> None:
    """Class card ``index`` says ``count`` photos and shows that many thumbnails, each
    with its Remove button."""
    expect(card(page, index).get_by_text(f"{name} · {count} photo(s)", exact=True)).to_be_visible(timeout=60_000)
    expect(thumbnails(page, index)).to_have_count(count, timeout=30_000)
    expect(page.locator(f".st-key-data_grid_{index}").get_by_role("button", name="Remove")).to_have_count(count)


def class_box(page):
    return page.get_by_role("combobox", name="To class", exact=True)


def open_data(page, url: str) -> None:
    page.goto(f"{url}/data")
    page.get_by_role("combobox", name="Dataset", exact=True).wait_for()
    settle(page)


def new_dataset_form(page) -> None:
    if page.get_by_role("combobox", name="Dataset", exact=True).input_value() != "New dataset...":
        choose(page, "Dataset", "New dataset...")  # another test's dataset is shown first
    page.get_by_label("Name of the new dataset", exact=True).wait_for()


def make_dataset(page, name: str) -> str:
    """Make a dataset called ``name`` from the page as opened; return its id (from ``?data=``)."""
    new_dataset_form(page)
    field = page.get_by_label("Name of the new dataset", exact=True)
    field.fill(name)
    page.get_by_role("button", name="Make dataset").click()
    page.get_by_label("First class name", exact=True).wait_for()
    settle(page)
    page.wait_for_url(re.compile(r"[?&]data="))
    return parse_qs(urlparse(page.url).query)["data"][0]


def add_class(page, name: str, first: bool) -> None:
    if not first:
        page.get_by_role("button", name="New class").click()
        settle(page)
    field = page.get_by_label("First class name" if first else "New class name", exact=True)
    field.fill(name)
    page.get_by_role("button", name="Add class").click()
    expect(class_box(page)).to_have_value(f"{name} (0)")
    settle(page)


def upload(page, name: str, files) -> None:
    page.get_by_text(f"Photos for '{name}'").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files)
    expect(class_box(page)).to_have_value(f"{name} ({len(files)})", timeout=60_000)
    settle(page)


def camera_ready(page) -> None:
    """The camera's stream is on (Take Photo enabled) and drawn at the page's width."""
    expect(page.get_by_role("button", name="Take Photo")).to_be_enabled(timeout=60_000)
    page.wait_for_function("""() => { const v = document.querySelector('[data-testid=stCameraInput] video');
        return v && v.videoWidth > 0 && v.getBoundingClientRect().width <= document.documentElement.clientWidth; }""",
                           timeout=30_000)


def took_same_frame(page, before: int) -> bool:
    """After a tap of Take Photo: False once the class has one more photo; True when the
    page said the photo is already in the class (the fake camera drew the same frame), or
    when nothing came of the tap in 45 s (a loaded machine lost it): the caller taps again."""
    added = class_box(page)
    same = page.get_by_text("is already in this class (the same photo)")
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        if added.input_value() == f"camera ({before + 1})":
            return False
        if same.count():  # a message from the tap before may still be drawn mid-rerun: settle, look again
            settle(page)
            if added.input_value() == f"camera ({before + 1})":
                return False
            if same.count():
                return True
        page.wait_for_timeout(250)
    settle(page)  # the tap was lost (or is still being stored): tap again unless it has landed meanwhile
    return added.input_value() != f"camera ({before + 1})"


# -- the tests -------------------------------------------------------------------------

def test_the_photos_are_different_real_crops_each_class_its_own(photos):
    """The flows below count photos: the same photo twice is kept once, so each must differ."""
    assert {name: len(paths) for name, paths in photos.items()} == {"cat": PHOTOS_PER_CLASS, "coffee": PHOTOS_PER_CLASS}
    contents = [open(path, "rb").read() for paths in photos.values() for path in paths]
    assert len(set(contents)) == len(contents)
    sizes = {Image.open(path).size for paths in photos.values() for path in paths}
    assert len(sizes) > 2 and all(min(size) >= 100 for size in sizes)


@browser_test
def test_a_dataset_made_on_a_phone_trains_and_classifies_with_the_camera(app, photos):
    page = page_at(app, PHONE, camera=True)
    try:
        _phone(app, page, photos)
    except Exception:
        page.screenshot(path=str(OUTPUT / "data-phone-failure.png"))
        raise
    finally:
        page.context.close()  # its fake camera draws frames for as long as it is open


def _phone(app, page, photos):
    url, root = app["url"], app["root"]
    before = {run.id for run in runs.list_runs(root)}

    # 1. A new dataset.
    open_data(page, url)
    new_dataset_form(page)
    in_first_screen(page, page.get_by_role("button", name="Make dataset"), "new dataset")
    no_overflow(page, "new dataset")
    shot(page, "phone-1-new-dataset")
    dataset_id = make_dataset(page, "Phone: Chelsea or camera")
    in_first_screen(page, page.get_by_role("button", name="Add class"), "first class")
    no_overflow(page, "first class")

    # 2. The first class from uploaded photos.
    add_class(page, "Chelsea", first=True)
    in_first_screen(page, page.get_by_test_id("stFileUploader").get_by_role("button").first, "upload")
    upload(page, "Chelsea", photos["cat"])
    has_photos(page, 0, "Chelsea", PHOTOS_PER_CLASS)
    no_overflow(page, "first class uploaded")
    shot(page, "phone-2-uploaded")

    # 3. The second class from the camera: one tap of Take Photo, one photo; the class stays chosen.
    add_class(page, "camera", first=False)
    page.get_by_test_id("stButtonGroup").get_by_text("Camera", exact=True).click()
    settle(page)
    page.get_by_text("Take a photo for 'camera'").wait_for()
    camera_ready(page)
    in_first_screen(page, page.get_by_role("button", name="Take Photo"), "camera")
    no_overflow(page, "camera")
    shot(page, "phone-3-camera")
    clicks = taps = 0
    while clicks < CAMERA_PHOTOS:
        camera_ready(page)
        in_first_screen(page, page.get_by_role("button", name="Take Photo"), f"camera, photo {clicks + 1}")
        # The fake camera restarts its clock with each fresh camera: a different wait each
        # time, so no two photos are the same frame (the same photo twice is kept once).
        page.wait_for_timeout(500 + 700 * taps)
        page.get_by_role("button", name="Take Photo").click()
        taps += 1
        if took_same_frame(page, clicks):
            # A loaded machine drew the same frame as before: the page said so and kept one.
            assert taps < CAMERA_PHOTOS + 3, "three taps of Take Photo added nothing (the same frame, or lost)"
            continue
        clicks += 1
        expect(class_box(page)).to_have_value(f"camera ({clicks})", timeout=60_000)
        settle(page)
        expect(page.get_by_text(f"'camera' has {clicks} now.")).to_be_visible()
        has_photos(page, 1, "camera", clicks)
        no_overflow(page, f"camera, photo {clicks}")
    assert clicks == CAMERA_PHOTOS
    expect(class_box(page)).to_have_value(f"camera ({clicks})")
    camera_ready(page)
    shot(page, "phone-4-camera-photos")

    # 4. Remove one uploaded photo: its class drops by one; the camera's class stays chosen.
    card(page, 0).get_by_role("button", name="Remove").first.click()
    settle(page)
    has_photos(page, 0, "Chelsea", PHOTOS_PER_CLASS - 1)
    has_photos(page, 1, "camera", clicks)
    expect(class_box(page)).to_have_value(f"camera ({clicks})")
    expect(page.get_by_role("combobox", name="Dataset", exact=True)).to_have_value(
        f"Phone: Chelsea or camera ({PHOTOS_PER_CLASS - 1 + clicks} photos)")
    no_overflow(page, "photo removed")
    shot(page, "phone-5-removed")

    # 5. Train on it at the defaults.
    page.get_by_role("button", name="Train on this dataset").click()
    page.wait_for_url(re.compile(r"/train"))
    dataset = page.get_by_role("combobox", name="Dataset", exact=True)
    expect(dataset).to_have_value("data:Phone: Chelsea or camera")
    settle(page)
    expect(page.get_by_role("combobox", name="Backbone", exact=True)).to_have_value("efficientnet_lite0")
    expect(page.get_by_role("combobox", name="Strategy", exact=True)).to_have_value("feature_extraction")
    no_overflow(page, "train page")
    page.locator(".st-key-train_start button").click()
    page.wait_for_url(re.compile(r"[?&]run="), timeout=60_000)
    (run_id,) = {run.id for run in runs.list_runs(root)} - before
    results = page.locator(".st-key-run_area")
    expect(results.get_by_test_id("stMetric").filter(has_text="Test accuracy")).to_be_visible(timeout=TIMEOUT_MS)
    settle(page)
    run = runs.get(run_id, root)
    assert run.status()["status"] == "done"
    assert (run.config.dataset, run.config.backbone, run.config.weights, run.config.strategy) == \
        ("data:Phone: Chelsea or camera", "efficientnet_lite0", "imagenet", "feature_extraction")
    no_overflow(page, "trained")
    shot(page, "phone-6-trained")

    # 6. Classify live with the camera: both heads answer.
    page.goto(f"{url}/classify")
    page.get_by_text("Test it live with the camera").wait_for()
    settle(page)
    choose(page, "Run", run_id)
    page.get_by_text("Test it live with the camera").click()
    settle(page)
    page.get_by_text("Take a photo to classify").wait_for()
    camera_ready(page)
    no_overflow(page, "classify camera")
    page.get_by_role("button", name="Take Photo").click()
    page.get_by_text("ImageNet head (efficientnet_lite0)").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("Transferred head (your classes)").first.wait_for()
    expect(page.locator(".js-plotly-plot")).to_have_count(2, timeout=60_000)
    charts = page.locator(".js-plotly-plot")
    expect(charts.nth(1).get_by_text(re.compile("^(Chelsea|camera)$")).first).to_be_attached()
    settle(page)
    drawn(page)
    no_overflow(page, "classified")
    assert page.get_by_test_id("stException").count() == 0
    shot(page, "phone-7-classify-camera")
    assert made.find(run.config.dataset, root).id == dataset_id  # the dataset in the page's address

    # 7. Teach it: the camera photo goes into a class (the guess chosen first), a new version.
    version = made.find(run.config.dataset, root).version
    adding = page.locator(".st-key-teach_add_0")
    expect(adding.get_by_role("combobox")).to_have_value(re.compile("^(Chelsea|camera)$"))
    in_view = adding.get_by_role("button", name="Add to class")
    in_view.scroll_into_view_if_needed()
    no_overflow(page, "add to class")
    in_view.click()
    expect(page.get_by_text(f"is at version {version + 1} now")).to_be_visible(timeout=60_000)
    assert made.find(run.config.dataset, root).version == version + 1
    shot(page, "phone-8-added")

    # 8. Update the model: the same settings on the new version; its results say what changed.
    settle(page)
    update = page.get_by_role("button", name="Update the model")
    expect(update).to_have_count(1, timeout=30_000)  # a rerun's stale copy gone
    update.click()
    page.wait_for_url(re.compile(r"/train"), timeout=60_000)
    (update_id,) = {r.id for r in runs.list_runs(root)} - before - {run_id}
    expect(page.get_by_text(f"What changed since run {run_id}")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text(f"the dataset went from version {version} to {version + 1}")).to_be_visible()
    settle(page)
    no_overflow(page, "updated")
    shot(page, "phone-9-updated")
    assert runs.get(update_id, root).metrics["update"]["updates"] == run_id

    # 9. Which photos to add next: a pool of three coffee photos ranked, one added with one tap.
    page.goto(f"{url}/classify?run={update_id}")
    page.get_by_test_id("stButtonGroup").get_by_text("Photos to add next", exact=True).click()
    settle(page)
    page.get_by_text("Unlabeled photos").wait_for()
    page.locator('.st-key-teach_pool_files input[type="file"]').set_input_files(photos["coffee"][:3])
    expect(page.get_by_text("3 photo(s) ranked")).to_be_visible(timeout=TIMEOUT_MS)
    settle(page)
    no_overflow(page, "pool ranked")
    shot(page, "phone-10-pool")
    page.locator(".st-key-teach_pool_0").get_by_role("button", name="camera", exact=True).click()
    expect(page.get_by_text("1 added, 2 left")).to_be_visible(timeout=60_000)
    assert made.find(run.config.dataset, root).version == version + 2
    assert page.get_by_test_id("stException").count() == 0


@browser_test
def test_photos_survive_a_reload_and_a_new_tab_and_train_opens_with_the_dataset(app, photos):
    page = page_at(app, WIDE)
    try:
        _wide(app, page, photos)
    except Exception:
        for i, each in enumerate(page.context.pages):
            each.screenshot(path=str(OUTPUT / f"data-wide-failure-{i}.png"))
        raise
    finally:
        page.context.close()


def _wide(app, page, photos):
    url = app["url"]
    name = "Wide: Chelsea or coffee"
    first = PHOTOS_PER_CLASS - 2  # the last two Chelsea photos come after the second class
    open_data(page, url)
    dataset_id = make_dataset(page, name)
    add_class(page, "Chelsea", first=True)
    upload(page, "Chelsea", photos["cat"][:first])
    has_photos(page, 0, "Chelsea", first)
    shot(page, "wide-1-first-class")

    def still_there(each) -> None:
        expect(each.get_by_role("combobox", name="Dataset", exact=True)).to_have_value(f"{name} ({first} photos)")
        has_photos(each, 0, "Chelsea", first)
        expect(class_box(each)).to_have_value(f"Chelsea ({first})")

    # A reload (the address keeps ?data=<id>), then the link in a new tab: every photo.
    page.reload()
    still_there(page)
    assert f"data={dataset_id}" in page.url
    settle(page)
    shot(page, "wide-2-reloaded")
    tab = page.context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(f"{url}/data?data={dataset_id}")
    still_there(tab)
    settle(tab)
    shot(tab, "wide-3-new-tab")
    tab.close()

    # The second class; then Chelsea chosen again (not the last class) gets its last two
    # photos one upload at a time: each lands in Chelsea, and the dataset stays chosen.
    add_class(page, "Coffee", first=False)
    upload(page, "Coffee", photos["coffee"])
    has_photos(page, 1, "Coffee", PHOTOS_PER_CLASS)
    choose(page, "To class", f"Chelsea ({first})")
    for count, path in enumerate(photos["cat"][first:], start=first + 1):
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([path])
        expect(class_box(page)).to_have_value(f"Chelsea ({count})", timeout=60_000)
        settle(page)
    expect(page.get_by_role("combobox", name="Dataset", exact=True)).to_have_value(
        f"{name} ({2 * PHOTOS_PER_CLASS} photos)")
    has_photos(page, 0, "Chelsea", PHOTOS_PER_CLASS)
    has_photos(page, 1, "Coffee", PHOTOS_PER_CLASS)
    train = page.get_by_role("button", name="Train on this dataset")
    expect(train).to_be_enabled()
    shot(page, "wide-4-two-classes")
    train.click()
    page.wait_for_url(re.compile(r"/train"))
    expect(page.get_by_role("combobox", name="Dataset", exact=True)).to_have_value(f"data:{name}")
    page.locator(".st-key-train_start button").wait_for()
    settle(page)
    assert page.get_by_test_id("stException").count() == 0
    shot(page, "wide-5-train")
