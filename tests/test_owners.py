"""Who may change what on a shared deployment (tl.owners, ui.owner): the token's digest, the
records in a run folder and a made dataset's manifest, the rule table, and the Train and
Data pages (AppTest) disabling what a session may not change and refusing it server-side
too. The real browser (cookies, two visitors) is tests/test_browser_owners.py."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from tl import owners, runs
from tl import sweep as sweeps
from tl.data import made
from tl.owners import Policy, digest, may_change

from conftest import REPO, photos, tiny_config

APP = str(REPO / "streamlit_app.py")
SECRET = "correct horse battery staple"
MINE, THEIRS = "a" * 32, "b" * 32
ANOTHER = "Made by another visitor: only they, or someone with the owner secret, can delete it."
UNOWNED = ("Made before owners were recorded (or with the command line): only someone with the owner secret can "
           "delete it.")


# -- the token's digest and the records -------------------------------------------------------

def test_digest_is_sha256_hex_of_the_token_and_never_the_token():
    found = digest(MINE)
    assert len(found) == 64 and int(found, 16) >= 0
    assert found == digest(MINE) != digest(THEIRS)
    assert MINE not in found
    assert digest(None) is None and digest("") is None


def test_a_run_records_its_owner_and_a_damaged_record_counts_as_none(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert owners.run_owner(run) is None  # before owners were recorded, or the CLI
    owners.record_run(run, digest(MINE))
    assert json.loads((run / owners.RUN_RECORD).read_text()) == {"owner": digest(MINE)}
    assert MINE not in (run / owners.RUN_RECORD).read_text()
    assert owners.run_owner(run) == digest(MINE)
    for damaged in ('{"owner": ', "null", '["x"]', '{"owner": "../../x"}', '{"owner": 3}'):
        (run / owners.RUN_RECORD).write_text(damaged)
        assert owners.run_owner(run) is None
    (run / owners.RUN_RECORD).unlink()
    owners.record_run(run, None)  # no owner: nothing written
    assert not (run / owners.RUN_RECORD).exists()
    owners.record_run(tmp_path / "gone", digest(MINE))  # a folder that cannot be written: no raise


def test_a_made_dataset_records_its_owner_through_every_change(runs_dir):
    dataset = made.create_dataset("Pets", runs_dir, owner=digest(MINE))
    assert json.loads((dataset.path / "dataset.json").read_text())["owner"] == digest(MINE)
    made.add_photos("Pets", "cat", photos(3), runs_dir)
    made.add_photos("Pets", "dog", photos(3, "coffee"), runs_dir)
    made.rename_class("Pets", "dog", "cup", runs_dir)
    found = made.find("Pets", runs_dir)
    assert owners.dataset_owner(found) == digest(MINE) and found.version > dataset.version
    # Made with the command line, or before owners were recorded: no owner, still readable.
    cli = made.create_dataset("Plants", runs_dir)
    assert "owner" not in json.loads((cli.path / "dataset.json").read_text())
    assert owners.dataset_owner(made.find("Plants", runs_dir)) is None


def test_a_dataset_made_from_a_zip_records_its_owner(runs_dir):
    dataset = made.create_dataset("Source", runs_dir)
    for name, picture in (("cat", "chelsea"), ("cup", "coffee")):
        made.add_photos(dataset, name, photos(3, picture))
    archive = runs_dir.parent / "source.zip"
    made.export_zip("Source", archive, runs_dir)
    copy, problems = made.import_zip("Copy", str(archive), runs_dir, owner=digest(THEIRS))
    assert problems == [] and owners.dataset_owner(copy) == digest(THEIRS)


def test_the_job_manager_and_a_sweep_record_the_submitting_sessions_owner(runs_dir):
    from tl.jobs import JobManager

    manager = JobManager(runs_dir, poll_seconds=0.1)
    try:
        run = manager.submit(tiny_config(name="owned"), owner=digest(MINE))
        assert owners.run_owner(run.path) == digest(MINE)
        unowned = manager.submit(tiny_config(name="no owner"))  # the CLI's way: no record
        assert owners.run_owner(unowned.path) is None
    finally:
        manager.shutdown(cancel_running=True)

    class Recorder:
        def __init__(self):
            self.owners = []

        def submit(self, cfg, data=None, owner=None):
            self.owners.append(owner)
            return runs.create(cfg, runs_dir)

    recorder = Recorder()
    sweep = sweeps.create(tiny_config(), ["scratch", "frozen"], runs_dir)
    sweeps.submit(sweep, recorder, owner=digest(THEIRS))
    assert recorder.owners == [digest(THEIRS)] * 2


# -- the rule ---------------------------------------------------------------------------------

SECRET_SET, SHARED, LAPTOP = Policy(secret=SECRET), Policy(shared=True), Policy()


@pytest.mark.parametrize("policy, owner, token, typed, allowed", [
    # not enforced (a laptop): everything is everyone's
    (LAPTOP, digest(THEIRS), MINE, None, True),
    (LAPTOP, None, MINE, None, True),
    # enforced by a secret: one's own only, unowned things only with the secret
    (SECRET_SET, digest(MINE), MINE, None, True),
    (SECRET_SET, digest(THEIRS), MINE, None, False),
    (SECRET_SET, None, MINE, None, False),
    (SECRET_SET, digest(THEIRS), None, None, False),  # a session without a token owns nothing
    (SECRET_SET, digest(THEIRS), MINE, "wrong", False),
    (SECRET_SET, digest(THEIRS), MINE, SECRET, True),
    (SECRET_SET, None, MINE, SECRET, True),
    (SECRET_SET, None, None, SECRET, True),
    # TL_SHARED=1 without a secret: one's own only; nobody can unlock the rest
    (SHARED, digest(MINE), MINE, None, True),
    (SHARED, digest(THEIRS), MINE, None, False),
    (SHARED, None, MINE, "", False),
    (SHARED, digest(THEIRS), MINE, SECRET, False),
])
def test_who_may_change_what(policy, owner, token, typed, allowed):
    assert may_change(owner, token, typed, policy) is allowed
    if allowed:
        owners.require(owner, token, typed, policy)
    else:
        with pytest.raises(owners.NotYours) as refused:
            owners.require(owner, token, typed, policy)
        assert str(refused.value) == owners.refusal(owner)


def test_the_refusal_says_why_in_one_sentence():
    assert owners.refusal(digest(THEIRS)) == ANOTHER
    assert owners.refusal(None) == UNOWNED
    assert owners.refusal(digest(THEIRS), "change").endswith("can change it.")


def test_the_policy_comes_from_the_environment_or_the_apps_secret(monkeypatch):
    assert not Policy.from_env().enforced
    assert Policy.from_env("from secrets") == Policy(secret="from secrets")
    monkeypatch.setenv(owners.SECRET_ENV, SECRET)
    assert Policy.from_env("from secrets") == Policy(secret=SECRET)  # the environment wins
    monkeypatch.delenv(owners.SECRET_ENV)
    monkeypatch.setenv(owners.SHARED_ENV, "1")
    assert Policy.from_env() == Policy(shared=True) and Policy.from_env().enforced
    monkeypatch.setenv(owners.SHARED_ENV, "0")
    assert not Policy.from_env().enforced
    assert owners.secret_matches(SECRET, SECRET_SET) and not owners.secret_matches("x", SECRET_SET)
    assert not owners.secret_matches(None, SECRET_SET) and not owners.secret_matches(SECRET, SHARED)


# -- the pages (AppTest) ----------------------------------------------------------------------

@pytest.fixture
def shared(runs_root, monkeypatch):
    """A shared deployment: the owner secret set, a runs folder with one finished run each
    of this session's (MINE), another visitor's and the command line's (no owner)."""
    monkeypatch.setenv(owners.SECRET_ENV, SECRET)
    found = {}
    for who, token in (("mine", MINE), ("theirs", THEIRS), ("cli", None)):
        run = runs.create(tiny_config(name=who), runs_root)
        run.set_status("failed", reason="for the test")
        owners.record_run(run.path, digest(token))
        found[who] = run
    return found


def open_page(page: str, token: str = MINE, query=None):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["owner_token"] = token  # as if read from this browser's cookie
    if query:
        at.query_params.update(query)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def forge_click(button):
    """Click a disabled button as a crafted message to the server would (AppTest, like a
    browser, refuses to). Streamlit discards such a click; the action behind the button
    refuses on its own as well (test_the_actions_themselves_refuse)."""
    button.proto.disabled = False
    return button.click()


def captions(at) -> str:
    return " ".join(e.value for e in at.caption)


def test_train_page_deletes_ones_own_run_and_not_another_visitors(shared):
    at = open_page("app_pages/train.py")
    at.selectbox(key="runs_pick").set_value(shared["theirs"].id).run()
    assert at.button(key="runs_delete").disabled
    assert f"Run {shared['theirs'].id}: {ANOTHER}" in captions(at)
    at.selectbox(key="runs_pick").set_value(shared["cli"].id).run()
    assert at.button(key="runs_delete").disabled and UNOWNED in captions(at)
    at.selectbox(key="runs_pick").set_value(shared["mine"].id).run()
    assert not at.button(key="runs_delete").disabled
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_yes").click().run()
    assert not at.exception and not shared["mine"].path.exists()
    assert shared["theirs"].path.exists() and shared["cli"].path.exists()


def test_only_my_runs_keeps_to_the_runs_this_browser_made(shared):
    at = open_page("app_pages/train.py")
    switch = at.toggle(key="runs_only_mine")
    assert switch.label == "Only my runs (1 of 3)" and not switch.value
    assert set(at.selectbox(key="runs_pick").options) == {run.id for run in shared.values()}
    switch.set_value(True).run()
    assert not at.exception
    assert at.selectbox(key="runs_pick").options == [shared["mine"].id]
    assert not at.button(key="runs_delete").disabled
    at.toggle(key="runs_only_mine").set_value(False).run()
    assert len(at.selectbox(key="runs_pick").options) == 3

    newcomer = open_page("app_pages/train.py", token="f" * 32)  # a browser that made nothing yet
    assert newcomer.toggle(key="runs_only_mine").label == "Only my runs (0 of 3)"
    newcomer.toggle(key="runs_only_mine").set_value(True).run()
    assert not newcomer.exception and not [b for b in newcomer.selectbox if b.key == "runs_pick"]
    assert "No run here was made in this browser yet" in captions(newcomer)
    assert [e for e in newcomer.expander if "owner secret" in e.label]  # the secret can still be given


def test_a_forged_click_deletes_nothing(shared):
    at = open_page("app_pages/train.py")
    at.selectbox(key="runs_pick").set_value(shared["theirs"].id).run()
    forge_click(at.button(key="runs_delete")).run()
    assert not at.exception
    assert [b for b in at.button if b.key == "runs_delete_yes"] == []
    assert shared["theirs"].path.exists()


def _actions_script():
    """Each action of the pages called straight, as if its button had been clicked."""
    import streamlit as st

    from tl import runs
    from tl import sweep as sweeps
    from tl.data import made
    from tl.errors import UserError
    from tl.paths import runs_root
    from ui.data_view import apply_change, show_flashes
    from ui.run_view import delete_run, stop_run
    from ui.sweep_view import stop_sweep

    root = str(runs_root())
    for name, action in (("delete run", lambda: delete_run(st.session_state["run"], root, None)),
                         ("stop run", lambda: stop_run(runs.get(st.session_state["run"], root), None)),
                         ("stop sweep", lambda: stop_sweep(sweeps.load(st.session_state["sweep"], root), None))):
        try:
            action()
        except UserError as exc:
            st.text(f"{name}: {type(exc).__name__}: {exc}")
    dataset = made.find(st.session_state["dataset"])
    if not st.session_state.get("changed"):
        st.session_state["changed"] = True
        apply_change(dataset, lambda: made.delete_class(dataset, "cat"), "Deleted class 'cat'.")
    show_flashes()


def test_the_actions_themselves_refuse(shared, their_dataset, runs_root):
    at = AppTest.from_function(_actions_script, default_timeout=60)
    at.session_state["owner_token"] = MINE
    at.session_state["run"] = shared["theirs"].id
    at.session_state["dataset"] = their_dataset.id
    sweep = sweeps.create(tiny_config(), ["scratch"], runs_root)
    sweep.add_run("scratch", shared["theirs"].id)
    at.session_state["sweep"] = sweep.id
    at.run()
    assert not at.exception, at.exception
    stop = ANOTHER.replace("delete", "stop")
    assert [t.value for t in at.text] == [f"delete run: NotYours: {ANOTHER}", f"stop run: NotYours: {stop}",
                                          f"stop sweep: NotYours: {stop}"]
    assert [e.value for e in at.error] == [ANOTHER.replace("delete", "change")]
    assert shared["theirs"].path.exists() and "cat" in made.find(their_dataset.id, runs_root).classes


def _live_script():
    """A queued run's live progress, with a stand-in for the job manager."""
    import streamlit as st

    from tl import runs
    from ui.run_view import live_progress

    class Manager:
        def position(self, run_id):
            return 1

        def cancel(self, run_id):
            st.session_state["cancelled"] = run_id

    live_progress(runs.get(st.session_state["run"]), Manager())


@pytest.mark.parametrize("who", ["mine", "theirs"])
def test_only_the_owner_may_stop_a_run(shared, who):
    run = runs.create(tiny_config(name="queued"), shared[who].path.parent)
    owners.record_run(run.path, owners.run_owner(shared[who].path))
    at = AppTest.from_function(_live_script, default_timeout=60)
    at.session_state["owner_token"] = MINE
    at.session_state["run"] = run.id
    at.run()
    assert not at.exception, at.exception
    stop = at.button(key="train_stop")
    if who == "theirs":
        assert stop.disabled and ANOTHER.replace("delete", "stop") in captions(at)
    else:
        stop.click().run()
        assert at.session_state["cancelled"] == run.id


def test_the_owner_secret_unlocks_everything_for_the_session(shared):
    at = open_page("app_pages/train.py", token=THEIRS)
    at.selectbox(key="runs_pick").set_value(shared["cli"].id).run()
    assert at.button(key="runs_delete").disabled
    at.text_input(key="runs_owner_secret").input("not it")
    at.button[[b.label for b in at.button].index("Unlock")].click().run()
    assert "That is not the owner secret." in [e.value for e in at.error]
    assert at.button(key="runs_delete").disabled
    at.text_input(key="runs_owner_secret").input(SECRET)
    at.button[[b.label for b in at.button].index("Unlock")].click().run()
    assert not at.exception and not at.button(key="runs_delete").disabled
    assert "Owner secret given" in captions(at)
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_yes").click().run()
    assert not shared["cli"].path.exists()


def test_nothing_is_restricted_without_a_secret_or_tl_shared(runs_root):
    run = runs.create(tiny_config(name="theirs"), runs_root)
    run.set_status("failed", reason="for the test")
    owners.record_run(run.path, digest(THEIRS))
    at = open_page("app_pages/train.py")
    assert not at.button(key="runs_delete").disabled
    assert "owner secret" not in captions(at) and not [e for e in at.expander if "owner secret" in e.label]
    assert not [t for t in at.toggle if t.key == "runs_only_mine"]  # one person's app: no switch


@pytest.fixture
def their_dataset(shared, runs_root):
    dataset = made.create_dataset("Their pets", runs_root, owner=digest(THEIRS))
    for name, picture in (("cat", "chelsea"), ("cup", "coffee")):
        made.add_photos(dataset, name, photos(3, picture))
    return made.find(dataset.id, runs_root)


def test_data_page_shows_another_visitors_dataset_but_changes_nothing(their_dataset, runs_root):
    at = open_page("app_pages/data.py", query={"data": their_dataset.id})
    change = "Made by another visitor: only they, or someone with the owner secret, can change it."
    assert change in captions(at) and ANOTHER in captions(at)
    assert [u for u in at.get("file_uploader")] == [] and not at.get("camera_input")
    assert at.button(key="data_delete").disabled
    hashes = [p.hash for p in their_dataset.classes["cat"]]
    remove = at.button(key=f"data_rm_0_{hashes[0]}")
    assert remove.disabled
    assert not at.button(key="data_train").disabled  # training on it is everyone's
    forge_click(remove).run()
    assert not at.exception
    assert made.find(their_dataset.id, runs_root).version == their_dataset.version


def test_data_page_opens_ones_own_dataset_first_and_marks_it(their_dataset, runs_root):
    made.create_dataset("Aardvarks", runs_root, owner=digest(MINE))  # first by name, but not theirs
    theirs = open_page("app_pages/data.py", token=THEIRS)
    picker = theirs.selectbox(key="data_pick")
    assert picker.value == their_dataset.id
    assert picker.options == ["Their pets (6 photos, yours)", "Aardvarks (0 photos)", "New dataset..."]
    mine = open_page("app_pages/data.py")
    assert mine.selectbox(key="data_pick").options[0] == "Aardvarks (0 photos, yours)"
    nobody = open_page("app_pages/data.py", token="f" * 32)  # made nothing: by name, none marked
    assert nobody.selectbox(key="data_pick").options[:2] == ["Aardvarks (0 photos)", "Their pets (6 photos)"]


def test_data_page_changes_ones_own_dataset_and_the_secret_unlocks_the_rest(their_dataset, runs_root):
    at = open_page("app_pages/data.py", token=THEIRS, query={"data": their_dataset.id})
    digest_ = their_dataset.classes["cat"][0].hash
    at.button(key=f"data_rm_0_{digest_}").click().run()
    assert not at.exception and len(made.find(their_dataset.id, runs_root).classes["cat"]) == 2
    other = open_page("app_pages/data.py", query={"data": their_dataset.id})
    other.text_input(key="data_owner_secret").input(SECRET)
    other.button[[b.label for b in other.button].index("Unlock")].click().run()
    assert not [b for b in other.button if b.key == "data_delete"]  # first the "Yes, delete" tick
    other.checkbox(key="data_delete_ok").check().run()
    other.button(key="data_delete").click().run()
    assert not other.exception
    assert made.list_datasets(runs_root) == []


def test_a_dataset_made_on_the_page_records_the_sessions_owner(shared, runs_root):
    at = open_page("app_pages/data.py")
    at.text_input(key="data_new_name").set_value("Mine")
    at.button[[b.label for b in at.button].index("Make dataset")].click().run()
    assert not at.exception
    assert owners.dataset_owner(made.find("Mine", runs_root)) == digest(MINE)
