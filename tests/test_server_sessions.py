"""A real ``streamlit run`` driven by light sessions (``bench/stsession.py``: Streamlit's own
websocket protocol, no browser), the way a classroom uses one server:

1. A hundred sessions, ten at a time, open Home or Classify and close: no session stays
   connected; once ``server.disconnectedSessionTTL`` has passed none of them can be resumed
   and no session state is held; every ``st.cache_*`` function holds at most its
   ``max_entries`` (misses less evictions, from ``/_stcore/metrics``), and the app's own
   caches stay within their limits (their ``holding`` lines in the server's log).
2. Two sessions classify a photo at once on the same finished run: both see both heads'
   charts, and the server loaded the run's model once (its ``tl cache models: load`` lines).

In this order: the hundred sessions come first, before any model is in the server, so
they are quick. Not timed: the latencies are ``bench/load.py``'s job.
"""

import ast
import importlib.util
import re
import threading
import time

import pytest

from tl import efficientnet_lite

import suite_plan
from conftest import LITE0_RUN, REPO, photo, tiny_config, wait_for

TTL = 5  # server.disconnectedSessionTTL here: long enough to resume a session just closed
UPLOADER = "Images ("  # Classify's uploader: "Images (JPEG, PNG, WebP, BMP, GIF, TIFF)"
UNLIMITED_ENTRIES = 2  # a cached function without max_entries is keyed by the runs folder or nothing


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load = _bench("load")  # puts bench/ on sys.path, so stsession imports below
from stsession import Session  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_once):
    if not efficientnet_lite.is_available("efficientnet_lite0"):
        pytest.skip(f"{efficientnet_lite.VARIANTS['efficientnet_lite0'].distribution} is not installed")
    root = tmp_path_factory.mktemp("sessions") / "runs"
    root.mkdir()
    lite = trained_once(tiny_config(**LITE0_RUN), root)
    log = root.parent / "server.log"
    with suite_plan.one_server_at_a_time("test_server_sessions' server"):
        process, url = load.start_server(root, log, TTL, None)
        try:
            yield {"url": url, "lite": lite.id, "log": log}
        finally:
            load.stop_server(process, {})


def _in_threads(work, count: int) -> None:
    """``work(i)`` for i in range(count), all at once; re-raise the first failure."""
    failures = []

    def guarded(i):
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _classify(tab, lite: str, name: str, data: bytes) -> int:
    tab.open("classify", run=lite)
    outcome = tab.upload(UPLOADER, [(name, data)])
    assert outcome.errors == [], outcome.errors
    return len(tab.elements("plotly_chart"))


def max_entries() -> dict:
    """``{function name: max_entries or None}`` of every ``st.cache_data``/``st.cache_resource``
    in the app's pages and ui/, read from the source. A limit computed at import (a name, an
    expression) is evaluated after the module's imports and the assignments of the names it
    uses, and nothing else: page code run outside an app leaves Streamlit's process-wide state
    changed (an ``st.form`` marks the main container as a form for every later AppTest)."""
    found = {}
    for path in [REPO / "streamlit_app.py", *(REPO / "app_pages").glob("*.py"), *(REPO / "ui").glob("*.py")]:
        tree = ast.parse(path.read_text())
        limits = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                call = decorator if isinstance(decorator, ast.Call) else None
                if getattr(call.func if call else decorator, "attr", None) not in ("cache_data", "cache_resource"):
                    continue
                limit = [k.value for k in (call.keywords if call else ()) if k.arg == "max_entries"]
                limits[node.name] = limit[0] if limit else None
        used = {name.id for limit in limits.values() if limit is not None
                for name in ast.walk(limit) if isinstance(name, ast.Name)}
        names = {}
        for node in tree.body:
            assigned = {target.id for target in getattr(node, "targets", ()) if isinstance(target, ast.Name)}
            if isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.Assign) and assigned & used):
                exec(compile(ast.Module([node], []), str(path), "exec"), names)
        for function, limit in limits.items():
            found[function] = None if limit is None else eval(compile(ast.Expression(limit), str(path), "eval"), names)
    return found


def held_entries(metrics: dict) -> dict:
    """``{(cache type, function): entries}``: computed (misses) less evicted, by function."""
    held = {}
    for series, value in metrics.items():
        match = re.match(r'cache_(lookups|evictions)_total\{(.*)\}$', series)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        key = (labels["cache_type"], labels["cache"])
        if match.group(1) == "lookups" and labels["result"] == "miss":
            held[key] = held.get(key, 0) + value
        elif match.group(1) == "evictions":
            held[key] = held.get(key, 0) - value
    return held


def test_the_limits_are_read_from_the_source_without_running_a_page():
    limits = max_entries()  # the autouse guard fails this test if a page's code ran
    assert limits["classify"] == limits["explain"] and 8 <= limits["classify"] <= 64
    assert (limits["_thumb"], limits["_similarity"], limits["_small"]) == (4096, 32, 512)
    assert limits["job_manager"] is None and limits["server_caches"] is None


def test_held_entries_are_misses_less_evictions_by_function():
    found = held_entries({'cache_lookups_total{cache_type="st_cache_data",cache="app.classify",result="miss"}': 5,
                          'cache_lookups_total{cache_type="st_cache_data",cache="app.classify",result="hit"}': 9,
                          'cache_evictions_total{cache_type="st_cache_data",cache="app.classify"}': 2,
                          "active_sessions": 3})
    assert found == {("st_cache_data", "app.classify"): 3}


@pytest.mark.slow
def test_a_hundred_sessions_leave_no_session_behind_and_caches_within_limits(server, monkeypatch):
    monkeypatch.delenv("TL_MEMORY_BUDGET_MB", raising=False)  # as the server runs: limits without a budget
    url, lite = server["url"], server["lite"]
    connects = load.metrics(url)['session_events_total{type="connect"}']
    # The probe used below works: a session closed a moment ago is taken up again.
    with Session(url) as tab:
        tab.open("")
        first = tab.session_id
    with Session(url, resume=first) as tab:
        tab.open("")
        assert tab.session_id == first

    ids = []

    def student(i):
        with Session(url, timeout=150) as tab:
            if i % 2:
                tab.open("")
            else:
                tab.open("classify", run=lite)
                tab.widget(UPLOADER, "file_uploader")  # the page is there, waiting for photos
            assert tab.errors() == [], tab.errors()
            ids.append(tab.session_id)

    for batch in range(10):
        _in_threads(lambda i: student(batch * 10 + i), 10)
    assert len(set(ids)) == 100
    wait_for(lambda: load.metrics(url)["active_sessions"] == 0, "every session to disconnect", timeout=30)
    assert load.metrics(url)['session_events_total{type="connect"}'] - connects >= 101

    time.sleep(TTL + 3)
    for old in ids[-5:]:  # expired: each comes back as a new session
        with Session(url, resume=old) as tab:
            tab.open("")
            assert tab.session_id != old
    found = load.metrics(url)
    assert found["active_sessions"] == 0
    assert found.get('cache_memory_bytes{cache_type="st_session_state",cache=""}', 0) == 0

    limits = max_entries()
    held = held_entries(found)
    assert held, "no cache metrics on /_stcore/metrics"
    for (kind, function), entries in held.items():
        limit = limits.get(function.rsplit(".", 1)[-1])
        assert entries <= (limit or UNLIMITED_ENTRIES), (kind, function, entries, limit)
    # The app's own caches (models, datasets) report what they hold against their limit.
    for line in server["log"].read_text().splitlines():
        holding = re.search(r"^tl cache (\w+): .*holding (\d+) entries, ([\d,]+) MB of ([\d,]+) MB", line)
        if holding:
            assert int(holding[3].replace(",", "")) <= int(holding[4].replace(",", "")), line


@pytest.mark.slow
def test_two_sessions_classify_at_once_and_the_model_loads_once(server):
    charts = {}

    def student(i):
        with Session(server["url"], timeout=150) as tab:
            charts[i] = _classify(tab, server["lite"], f"cat-{i}.jpg", photo(i))

    _in_threads(student, 2)
    assert charts == {0: 2, 1: 2}  # one photo: the ImageNet head's chart and the transferred head's
    log = server["log"].read_text()
    loads = [line for line in log.splitlines() if line.startswith("tl cache models: load") and server["lite"] in line]
    assert len(loads) == 1, log[-3000:]
