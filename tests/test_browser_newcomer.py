"""The app as a newcomer meets it, in headless Chromium at 1400x900 and 390 px wide.

- The Train button is in the first 900 px; once a run is on screen its results come first.
- A reload and **Open** show the run's own settings in the form.
- Clicking a confusion-matrix cell filters the misclassified gallery.
- Back from Classify returns to the Train page as the user left it (advisor prefill kept,
  no Classify run in the address).
- A transfer strategy on a backbone without pretrained weights is warned about before Train.
- At 390 px nothing in the results is cut off with an ellipsis.
- Compare's "Pick finished runs" step, five times in a row.
- At 390 px, Classify says "none of my classes" for a noise photo and not for one of the
  run's own photos (a Lite0 feature-extraction run).
- A screenshot of every page at both widths (``<TL_TEST_OUTPUT>/screenshots/newcomer-*``).
"""

import re
import time

import pytest

from tl import runs

from conftest import LITE0_RUN, tiny_config, train_run
from test_e2e_browser import (OUTPUT, TIMEOUT_MS, _browser_or_skip, browser_test, choose, drawn, pick_option,
                              pick_runs, serve, settle, tall_screenshot)

WIDE = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trained_once):
    root = tmp_path_factory.mktemp("newcomer") / "runs"
    root.mkdir()
    # Three classes, two epochs from scratch: a model that makes mistakes to click on.
    shapes = train_run(root, tiny_config(strategy="scratch", synthetic_classes=3, samples_per_class=30, epochs=2,
                                         image_size=24, seed=3, name="three shapes"))
    frozen = train_run(root, tiny_config(strategy="frozen", image_size=16, name="frozen"))
    # Real ImageNet features, so that its rule tells noise from its shapes (for Classify).
    lite = trained_once(tiny_config(**LITE0_RUN), root)
    return {"root": root, "shapes": shapes, "frozen": frozen, "lite": lite}


@pytest.fixture(scope="module")
def app(trained):
    _browser_or_skip()
    with serve(trained["root"]) as found:
        yield {**found, **trained}


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=30_000)  # a loaded CI machine can take longer than 5 s to draw
    return playwright_expect(locator)


def page_at(app, viewport=WIDE):
    page = app["browser"].new_context(viewport=viewport).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def open_train(page, url: str, run_id: str | None = None) -> None:
    page.goto(f"{url}/train" + (f"?run={run_id}" if run_id else ""))
    page.get_by_text("Hyper-parameters").wait_for()
    settle(page)


def value_of(page, label: str) -> str:
    """What a selectbox shows (its input's value)."""
    return page.get_by_role("combobox", name=label, exact=True).input_value()


def bottom(locator) -> float:
    box = locator.bounding_box()
    assert box is not None, "not on screen"
    return box["y"] + box["height"]


def snap(page, name: str) -> None:
    """The whole page, in a 4,000 px tall viewport."""
    tall_screenshot(page, OUTPUT / f"newcomer-{name}-{page.viewport_size['width']}.png", 4000)


TRUNCATED = """(root) => [...root.querySelectorAll('*')].filter(e => {
    const style = getComputedStyle(e);
    return style.textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth + 1 && e.innerText.trim();
}).map(e => e.innerText.trim().slice(0, 80))"""


def test_the_runs_on_screen_have_what_the_browser_tests_look_for(trained):
    """The two runs the tests below open: done, with the settings the form must show, and the
    three-shapes run with test mistakes (a confusion-matrix cell to click on)."""
    shapes, frozen = trained["shapes"], trained["frozen"]
    assert [run.status()["status"] for run in (shapes, frozen)] == ["done", "done"]
    assert (shapes.config.backbone, shapes.config.strategy, shapes.config.image_size, shapes.config.seed) == \
        ("small_cnn", "scratch", 24, 3)
    assert (frozen.config.strategy, frozen.config.image_size) == ("frozen", 16)
    wrong = shapes.metrics["misclassified"]
    assert wrong and len(shapes.labels) == 3


@browser_test
def test_train_button_and_results_are_in_the_first_900_pixels(app):
    page = page_at(app)
    open_train(page, app["url"])
    assert bottom(page.get_by_role("button", name="Train", exact=True)) <= 900
    open_train(page, app["url"], app["shapes"].id)
    assert bottom(page.get_by_role("button", name="Train again with these settings")) <= 900
    results = page.locator(".st-key-run_area")
    assert bottom(results.get_by_test_id("stMetric").filter(has_text="Test accuracy")) <= 900
    assert not page.evaluate(TRUNCATED, results.element_handle())


@browser_test
def test_reload_and_open_show_the_runs_own_settings(app):
    page = page_at(app)
    shapes, frozen = app["shapes"], app["frozen"]
    open_train(page, app["url"], shapes.id)
    page.get_by_text("Hyper-parameters").click()
    for _ in range(2):  # as opened from the link, then after a reload
        # expect() polls: the values arrive with the page's first script run.
        expect(page.get_by_role("combobox", name="Backbone", exact=True)).to_have_value(re.compile("^small_cnn$"))
        expect(page.get_by_role("combobox", name="Strategy", exact=True)).to_have_value(re.compile("^scratch$"))
        expect(page.get_by_label("Image size (pixels)", exact=True)).to_have_value("24")
        expect(page.get_by_label("Seed", exact=True)).to_have_value("3")
        page.reload()
        page.get_by_text("Hyper-parameters").wait_for()
        settle(page)
        page.get_by_text("Hyper-parameters").click()
    # Open another run from the runs list: the form and the address follow it.
    box = page.get_by_role("combobox", name="Run", exact=True)
    box.scroll_into_view_if_needed()

    def opener():
        box.click()
        box.fill(frozen.id)  # filters the options down to this run

    pick_option(page, opener, frozen.id)
    settle(page)
    page.locator(".st-key-runs_open button").click()
    page.get_by_text(f"Run {frozen.id}").first.wait_for()
    settle(page)
    expect(page.get_by_role("combobox", name="Strategy", exact=True)).to_have_value(re.compile("^frozen$"))
    expect(page.get_by_label("Image size (pixels)", exact=True)).to_have_value("16")
    assert f"run={frozen.id}" in page.url


@browser_test
def test_clicking_a_confusion_matrix_cell_filters_the_gallery(app):
    run = app["shapes"]
    metrics = run.metrics
    wrong = metrics["misclassified"]
    true, predicted = wrong[0]["true"], wrong[0]["predicted"]
    expected = sum(1 for m in wrong if m["true"] == true and m["predicted"] == predicted)
    assert expected < len(wrong) or len({(m["true"], m["predicted"]) for m in wrong}) == 1
    page = page_at(app)
    open_train(page, app["url"], run.id)
    plot = page.locator(".js-plotly-plot").filter(has_text="Confusion matrix")
    plot.scroll_into_view_if_needed()
    drawn(page)
    x, y = plot.evaluate("""(gd, cell) => { const L = gd._fullLayout, r = gd.getBoundingClientRect();
        return [r.left + L._size.l + L.xaxis.d2p(cell[1]), r.top + L._size.t + L.yaxis.d2p(cell[0])]; }""",
                         [true, predicted])
    page.mouse.click(x, y)
    expect(page.get_by_role("combobox", name="True class", exact=True)).to_have_value(true)
    expect(page.get_by_role("combobox", name="Predicted class", exact=True)).to_have_value(predicted)

    def gallery():
        texts = page.evaluate("() => [...document.querySelectorAll('[data-testid=stImageCaption]')]"
                              ".map(e => e.innerText)")  # at one instant: the gallery may be redrawn
        return [text for text in texts if "→" in text]

    deadline = time.time() + 30  # the rerun that redraws the gallery may still be on its way
    while time.time() < deadline and (len(gallery()) != min(expected, 24) or not all(
            c.startswith(f"{true} → {predicted} (") for c in gallery())):
        page.wait_for_timeout(250)
    captions = gallery()
    assert len(captions) == min(expected, 24), captions
    assert all(c.startswith(f"{true} → {predicted} (") for c in captions), captions
    snap(page, "train-matrix-click")


@browser_test
def test_back_from_classify_returns_to_train_as_left(app):
    page = page_at(app)
    page.goto(app["url"])
    page.get_by_text("Which strategy fits your data?").wait_for()
    page.get_by_text("No (X-rays").click()
    settle(page)
    page.get_by_role("button", name="Open Train with these choices").click()
    page.get_by_text("Hyper-parameters").wait_for()
    settle(page)
    assert value_of(page, "Strategy") == "earlier_layer"
    page.get_by_role("link", name="Classify").click()
    page.get_by_text("Images (JPEG, PNG").wait_for()
    settle(page)
    page.go_back()  # one step: Classify wrote no default run into the history
    page.get_by_text("Hyper-parameters").wait_for()
    settle(page)
    assert page.url.endswith("/train"), page.url
    assert value_of(page, "Strategy") == "earlier_layer"
    assert page.locator(".st-key-run_area").get_by_text("Run 2").count() == 0


@browser_test
def test_a_transfer_strategy_on_a_weightless_backbone_is_warned_before_train(app):
    page = page_at(app)
    open_train(page, app["url"])
    choose(page, "Backbone", "small_cnn")
    choose(page, "Strategy", "feature_extraction")
    warning = page.locator(".st-key-train_top").get_by_text("small_cnn has no pretrained weights")
    warning.wait_for()
    train = page.get_by_role("button", name="Train", exact=True)
    assert bottom(warning) <= train.bounding_box()["y"]  # read before the button
    assert bottom(train) <= 900
    snap(page, "train-weightless-warning")


@browser_test
def test_nothing_in_the_results_is_cut_off_on_a_phone(app):
    page = page_at(app, PHONE)
    open_train(page, app["url"], app["shapes"].id)
    results = page.locator(".st-key-run_area")
    results.get_by_text("Export").first.wait_for()
    assert page.evaluate(TRUNCATED, results.element_handle()) == []


@browser_test
@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400", "390"])
def test_a_screenshot_of_every_page(app, viewport):
    page = page_at(app, viewport)
    url, shapes = app["url"], app["shapes"]
    page.goto(url)
    page.get_by_text("Which strategy fits your data?").wait_for()
    snap(page, "home")
    open_train(page, url)
    snap(page, "train")
    open_train(page, url, shapes.id)
    page.locator(".st-key-run_area").get_by_text("Export").first.wait_for()
    settle(page)
    snap(page, "train-results")
    page.goto(f"{url}/classify?run={shapes.id}")
    page.get_by_text("Images (JPEG, PNG").wait_for()
    settle(page)
    snap(page, "classify")
    page.goto(f"{url}/compare")
    page.get_by_text("Pick finished runs").wait_for()
    settle(page)
    snap(page, "compare")
    assert page.get_by_test_id("stException").count() == 0


@browser_test
def test_compare_pick_runs_five_times_in_a_row(app):
    ids = (app["shapes"].id, app["frozen"].id)
    assert {r.id for r in runs.list_runs(app["root"])} >= set(ids)
    for attempt in range(5):
        page = page_at(app)
        pick_runs(page, app["url"], ids)
        if attempt == 0:
            snap(page, "compare-picked")
        page.context.close()


@browser_test
def test_classify_on_a_phone_says_none_of_my_classes_for_an_outsider_only(app, tmp_path):
    from PIL import Image

    from test_app_classify import noise_png, training_photo

    outsider, own = tmp_path / "noise.png", tmp_path / "shape.png"
    outsider.write_bytes(noise_png())
    Image.fromarray(training_photo(app["lite"])).save(own)
    page = page_at(app, PHONE)
    page.goto(f"{app['url']}/classify?run={app['lite'].id}")
    page.get_by_text("Images (JPEG, PNG").wait_for()
    settle(page)
    expect(page.get_by_text("Flag photos of none of my classes")).to_be_visible()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(outsider), str(own)])
    expect(page.locator(".js-plotly-plot")).to_have_count(4, timeout=120_000)  # two heads for each photo
    settle(page)
    photos = page.locator("[class*='st-key-classify_photo_']")
    flag = "[class*='st-key-classify_unknown_']"
    warning = photos.filter(has_text="noise.png").locator(flag)
    expect(warning).to_have_count(1)
    expect(warning).to_contain_text("This looks like none of the 2 classes this run was trained on")
    expect(photos.filter(has_text="shape.png").locator(flag)).to_have_count(0)
    assert page.locator(flag).count() == 1
    charts = photos.filter(has_text="noise.png").locator(".js-plotly-plot")
    assert bottom(warning) <= charts.first.bounding_box()["y"]  # read before the guesses
    drawn(page)
    assert page.evaluate(TRUNCATED, page.locator("[data-testid=stMain]").element_handle()) == []
    assert page.get_by_test_id("stException").count() == 0
    snap(page, "classify-outsider")
