"""Two visitors of one shared app in headless Chromium: nobody's work deleted by another.

A real ``streamlit run`` with ``TL_OWNER_SECRET`` set, and two browser contexts (two
browsers, each with its own cookies):

1. Visitor A trains a tiny run from the Train page and makes a dataset on the Data page.
   A's browser got the ``tl_owner`` cookie on its first visit (path ``/``, a year,
   SameSite=Lax, set on the app's own origin); the run folder and the dataset record
   the cookie's sha256, never the cookie.
2. Visitor B opens A's run and A's dataset: the Delete buttons are disabled and one
   sentence says why; adding photos is replaced by that sentence.
3. B gives the owner secret and can then delete A's dataset.
4. A reloads (the cookie is kept) and still owns the run: A deletes it.

Screenshots (``<TL_TEST_OUTPUT>/screenshots/``): ``owners-1-run-of-another.png`` (B's view
of A's run, Delete disabled), ``owners-2-dataset-of-another.png`` (B's view of A's
dataset), ``owners-3-unlocked.png`` (B after the owner secret, before deleting).
"""

import hashlib
import json
import time

import pytest

from tl import owners, runs
from tl.data import made
from tl.paths import runs_root

from test_browser_data import add_class, make_dataset, open_data
from test_browser_newcomer import WIDE, expect
from test_e2e_browser import (OUTPUT, TIMEOUT_MS, _browser_or_skip, browser_test, serve, settle, start_training,
                              wait_for)

SECRET = "a secret only the teacher knows"
ANOTHER = "Made by another visitor: only they, or someone with the owner secret, can {verb} it."


@pytest.fixture  # one per test, so that a rerun starts from a fresh runs folder
def app(tmp_path_factory):
    _browser_or_skip()
    root = tmp_path_factory.mktemp("owners") / "runs"
    root.mkdir()
    with serve(root, env={owners.SECRET_ENV: SECRET}) as found:
        yield found


def visitor(app):
    """A new browser of its own: its own cookies, as another person's phone or laptop."""
    context = app["browser"].new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def owner_cookie(page) -> dict:
    """The browser's owner cookie, once its page's snippet has set it (the frame loads after
    the page is drawn: on a loaded machine, seconds later)."""
    found = wait_for(lambda: [c for c in page.context.cookies() if c["name"] == "tl_owner"], "the owner cookie", 60)
    (cookie,) = found
    return cookie


def test_the_sentences_waited_for_are_the_apps_own():
    """The browser test waits for these sentences: a reworded refusal fails here at once,
    not after a browser's timeout."""
    for verb in ("delete", "change"):
        assert ANOTHER.format(verb=verb) == owners.refusal("someone else's digest", verb)


@browser_test
def test_a_visitor_cannot_delete_anothers_run_or_dataset_until_given_the_owner_secret(app):
    a, b = visitor(app), visitor(app)
    try:
        _two_visitors(app, a, b)
    except Exception:
        for name, page in (("a", a), ("b", b)):
            page.screenshot(path=str(OUTPUT / f"owners-failure-{name}.png"), full_page=True)
        raise
    finally:
        a.context.close()
        b.context.close()


def _two_visitors(app, a, b):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    url, root = app["url"], app["root"]

    # 1. A trains a tiny run and makes a dataset; both record the digest of A's cookie.
    run_id = start_training(a, app, epochs=1, samples=20)
    cookie = owner_cookie(a)
    assert cookie["path"] == "/" and cookie["sameSite"] == "Lax" and cookie["domain"] == "127.0.0.1"
    assert cookie["expires"] > time.time() + 364 * 24 * 3600  # a year
    mine = hashlib.sha256(cookie["value"].encode()).hexdigest()
    run_path = runs_root(root) / run_id
    assert json.loads((run_path / owners.RUN_RECORD).read_text()) == {"owner": mine}
    open_data(a, url)
    dataset_id = make_dataset(a, "Class pets")
    add_class(a, "cat", first=True)
    dataset = made.find(dataset_id, root)
    assert dataset.owner == mine
    assert cookie["value"] not in (dataset.path / "dataset.json").read_text()

    # 2. B opens A's run and A's dataset: nothing of them can be deleted or changed.
    b.goto(f"{url}/train?run={run_id}")
    delete_run = b.locator(".st-key-runs_delete").get_by_role("button", name="Delete", exact=True)
    expect(delete_run).to_be_disabled()
    expect(b.get_by_text(f"Run {run_id}: {ANOTHER.format(verb='delete')}")).to_be_visible()
    assert owner_cookie(b)["value"] != cookie["value"]
    b.screenshot(path=str(OUTPUT / "owners-1-run-of-another.png"), full_page=True)
    b.goto(f"{url}/data?data={dataset_id}")
    expect(b.get_by_text(ANOTHER.format(verb="change"))).to_be_visible()
    expect(b.get_by_role("button", name="New class")).to_have_count(0)  # adding photos: the sentence instead
    b.get_by_text("Delete this dataset").click()
    expect(b.get_by_text(ANOTHER.format(verb="delete"))).to_be_visible()
    expect(b.get_by_role("button", name="Delete dataset")).to_be_disabled()
    b.screenshot(path=str(OUTPUT / "owners-2-dataset-of-another.png"), full_page=True)

    # 3. With the owner secret, B may delete it.
    b.get_by_text("Manage everything (owner secret)").click()
    b.get_by_label("Owner secret", exact=True).fill(SECRET)
    b.get_by_role("button", name="Unlock").click()
    expect(b.get_by_text("Owner secret given")).to_be_visible()
    settle(b)
    tick = b.get_by_text("Yes, delete 'Class pets'")
    try:
        tick.wait_for(timeout=5000)  # the expander may have stayed open over the rerun
    except PlaywrightTimeout:
        b.get_by_text("Delete this dataset").click()
    tick.click()
    settle(b)
    b.screenshot(path=str(OUTPUT / "owners-3-unlocked.png"), full_page=True)
    b.get_by_role("button", name="Delete dataset").click()
    wait_for(lambda: made.list_datasets(root) == [], "A's dataset to be deleted", 60)

    # 4. A, after a reload (the same browser: the cookie is kept), still owns the run (once it
    # has finished: a loaded machine may still be training it).
    wait_for(lambda: runs.get(run_id, root).status().get("status") in runs.FINISHED, "A's run to finish", 240)
    a.goto(f"{url}/train?run={run_id}")
    a.reload()
    assert owner_cookie(a)["value"] == cookie["value"]
    delete_own = a.locator(".st-key-runs_delete").get_by_role("button", name="Delete", exact=True)
    expect(delete_own).to_be_enabled()
    delete_own.click()
    a.get_by_role("button", name="Yes, delete").click()
    wait_for(lambda: not run_path.exists(), "A's run to be deleted", 60)
