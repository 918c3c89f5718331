"""The app's one memory budget (tl.memory): what is in use, the refusals, the server's
sized caches, and the job manager waiting for memory (real worker processes)."""

import subprocess
import sys
import threading
import time

import pytest

from tl import memory, run_cost
from tl.run_cost import BudgetError
from tl.files import read_json
from tl.jobs import JobManager

from conftest import tiny_config, wait_for


@pytest.fixture(autouse=True)
def clean_ledger(monkeypatch):
    monkeypatch.setattr(memory, "_reserved", {})
    monkeypatch.setattr(memory, "_releasers", [])
    monkeypatch.setattr(memory, "_caches", [])
    monkeypatch.delenv(run_cost.BUDGET_ENV, raising=False)


def hog(mb: int):
    """A child process holding ``mb`` MB (touched), until it is killed."""
    code = f"b = bytearray({mb} * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ready', flush=True)\nimport time; time.sleep(120)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


# -- what is in use ------------------------------------------------------------------------

def test_in_use_counts_the_process_and_its_children_by_the_larger_of_rss_and_reservation():
    before = memory.in_use()
    assert before["server"] > 10 and before["total"] >= before["server"]
    child = hog(150)
    try:
        found = memory.in_use()
        assert found["children"][child.pid][0] >= 150
        assert found["children"][child.pid][1] == "a background process"
        memory.reserve(child.pid, 5000, "training run X", time.time() + 600)
        found = memory.in_use()
        assert found["children"][child.pid] == (5000, "training run X", pytest.approx(time.time() + 600, abs=5))
        assert found["total"] >= found["server"] + 5000
    finally:
        child.kill()
        child.wait()
    assert child.pid not in memory.in_use()["children"]
    assert child.pid not in memory._reserved  # its slot is freed once it has gone


def test_a_child_that_has_exited_but_is_not_yet_reaped_is_not_in_use():
    """A zombie holds no memory: counted, it made a refusal say "try again when it has
    finished" about a process that had finished (seen when an earlier test left one)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for(lambda: open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", "a zombie")
        assert child.pid in memory.descendants()
        assert child.pid not in memory.in_use()["children"]
        memory.reserve(child.pid, 500, "training run Z")
        assert child.pid not in memory.in_use()["children"] and child.pid not in memory._reserved
    finally:
        child.wait()


def test_need_fits_releases_caches_then_refuses_with_who_and_when(monkeypatch):
    memory.need(10 ** 9, "Anything")  # no budget: always fits
    released = []
    memory.on_pressure(lambda: released.append(1))
    # Only this process and the child reserved below: a process an earlier test left running
    # (and that may end at any moment) is not part of this test.
    monkeypatch.setattr(memory, "descendants", lambda pid=None: [])
    server = memory.rss_mb()
    memory.need(100, "Loading this run's model", budget=server + 500)
    assert released == []  # it fitted: nothing dropped
    child = hog(20)
    try:
        memory.reserve(child.pid, 1500, "training run 20261202-abcd", time.time() + 300)
        with pytest.raises(BudgetError) as caught:
            memory.need(600, "Loading this run's model", budget=server + 1800)
    finally:
        child.kill()
        child.wait()
    assert released == [1]  # the caches were dropped before refusing
    text = str(caught.value)
    assert text.startswith("Loading this run's model needs about 600 MB, but the app is using ")
    assert "1,500 MB of it for training run 20261202-abcd" in text
    assert "try again in about 5 min, when it has finished." in text
    assert run_cost.BUDGET_ENV in text and text.count(".") >= 1


def test_need_reads_the_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv(run_cost.BUDGET_ENV, "50")
    with pytest.raises(BudgetError, match="ask whoever runs the app for a larger budget"):
        memory.need(10, "Reading this dataset")


# -- the server's caches -------------------------------------------------------------------

def test_cache_loads_each_key_once_however_many_threads_ask():
    cache = memory.Cache("models", limit_mb=1000, max_entries=4, need=None, log=False)
    calls = []
    gate = threading.Event()

    def make():
        calls.append(1)
        gate.wait(5)
        return object()

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("run-a", make, 100))) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(got) == 8 and len({id(v) for v in got}) == 1
    assert cache.loads == 1 and len(cache) == 1


def test_cache_evicts_least_recently_used_by_megabytes_and_entries(capsys):
    cache = memory.Cache("models", limit_mb=500, max_entries=3, need=None)
    for key in "abc":
        cache.get(key, lambda key=key: key.upper(), 150)
    assert cache.peek("a") == "A"  # a is now the most recently used
    cache.get("d", lambda: "D", 150)  # 600 MB > 500: the least recent (b) goes
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    cache.get("e", lambda: "E", 100)  # 3 entries at most: c goes
    assert "c" not in cache and len(cache) == 3
    cache.get("big", lambda: "BIG", 2000)  # larger than the limit: held, alone
    assert len(cache) == 1 and cache.peek("big") == "BIG" and cache.held_mb == 2000
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "tl cache models: load a (150 MB); holding 1 entries, 150 MB of 500 MB"
    assert "tl cache models: evict b; holding 2 entries, 300 MB of 500 MB" in lines
    assert sum(line.startswith("tl cache models: load") for line in lines) == 6


def test_cache_failed_load_is_not_held_and_another_caller_retries():
    cache = memory.Cache("data", limit_mb=100, max_entries=2, need=None, log=False)

    def broken():
        raise ValueError("unreadable")

    with pytest.raises(ValueError):
        cache.get("x", broken, 10)
    assert "x" not in cache
    assert cache.get("x", lambda: 42, 10) == 42


def test_cache_asks_the_budget_before_loading_and_is_dropped_under_pressure(monkeypatch):
    asked = []
    cache = memory.Cache("models", limit_mb=1000, max_entries=4, need=lambda mb, what: asked.append((mb, what)),
                         log=False)
    cache.get("a", lambda: 1, 45, "Loading this run's model")
    assert asked == [(45, "Loading this run's model")]
    rss = memory.rss_mb()
    assert rss - 45 - 5 <= memory.floor_mb() <= rss - 45 + 5  # what the cache holds is droppable
    memory.release_caches()
    assert len(cache) == 1  # used a moment ago: sessions hold it, dropping it would free nothing
    monkeypatch.setattr(memory, "IDLE_SECONDS", 0.0)
    memory.release_caches()
    assert len(cache) == 0

    def refuse(mb, what):
        raise BudgetError("no room")

    tight = memory.Cache("models", limit_mb=1000, max_entries=4, need=refuse, log=False)
    with pytest.raises(BudgetError):
        tight.get("b", lambda: 2, 10)
    assert "b" not in tight


def test_predictor_and_data_sizes_follow_the_backbone_and_dataset():
    assert run_cost.predictor_mb("efficientnet_lite0") == pytest.approx(145, abs=1)
    assert run_cost.predictor_mb("resnet50") == pytest.approx(530, abs=1)
    assert run_cost.predictor_mb("no such backbone") >= run_cost.predictor_mb("resnet101")
    assert run_cost.data_mb(tiny_config(dataset="cifar10")) > 170
    assert run_cost.data_mb(tiny_config()) < 10


def test_cache_limits_come_from_the_budget(monkeypatch):
    assert memory.cache_limit_mb(0.25, 1500) == 1500
    monkeypatch.setenv(run_cost.BUDGET_ENV, "2500")
    assert memory.cache_limit_mb(0.25, 1500) == 625


# -- the job manager ------------------------------------------------------------------------

def test_the_app_refuses_a_run_that_cannot_fit_beside_its_server(runs_dir, monkeypatch):
    cfg = tiny_config(epochs=1)
    alone = run_cost.estimate(cfg.resolved(), 40).memory_mb
    monkeypatch.setenv(run_cost.BUDGET_ENV, str(int(alone + 50)))  # fits alone, not beside this process
    manager = JobManager(runs_dir, poll_seconds=0.1, app_memory=True)
    try:
        with pytest.raises(BudgetError, match="of which the app itself holds"):
            manager.submit(cfg)
        assert not list(runs_dir.iterdir()) or not any(p.name[:8].isdigit() for p in runs_dir.iterdir())
    finally:
        manager.shutdown(cancel_running=True)
    scripts = JobManager(runs_dir, poll_seconds=0.1)  # a script's manager counts the run alone
    try:
        run = scripts.submit(cfg)
        assert read_json(run.path / "status.json")["estimate_mb"] == round(alone)
        scripts.cancel(run.id)
    finally:
        scripts.shutdown(cancel_running=True)


@pytest.mark.slow
def test_a_second_run_waits_for_memory_and_starts_when_the_first_ends(runs_dir, monkeypatch):
    cfg = tiny_config(epochs=1)
    each = run_cost.estimate(cfg.resolved(), 40).memory_mb
    # Room for this process and one run (the first worker is reserved at its estimate), not two.
    monkeypatch.setenv(run_cost.BUDGET_ENV, str(int(memory.rss_mb() + 200 + 1.5 * each)))
    manager = JobManager(runs_dir, max_parallel=2, poll_seconds=0.1, app_memory=True)
    try:
        first = manager.submit(cfg)
        second = manager.submit(cfg.replace(seed=1))
        assert manager.running() == [first.id] and manager.queue() == [second.id]
        waiting = [e["message"] for e in second.events()[0] if e["type"] == "log"]
        assert any(m.startswith("Waiting for memory: this run needs about") for m in waiting), waiting
        wait_for(lambda: read_json(first.path / "status.json")["status"] == "done", "the first run", 180)
        wait_for(lambda: read_json(second.path / "status.json")["status"] == "done", "the second run", 180)
        assert read_json(second.path / "status.json")["started"] >= read_json(first.path / "status.json")["finished"] - 1
    finally:
        manager.shutdown(cancel_running=True)


def test_serving_many_sessions_caps_malloc_arenas_and_trims_in_the_background():
    assert memory.serve_quietly(arenas=8, trim_seconds=3600) is True  # this process's own: change little
    assert any(thread.name == "tl-malloc-trim" and thread.daemon for thread in threading.enumerate())
