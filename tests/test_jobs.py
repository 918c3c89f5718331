"""The job manager, with real worker processes on tiny runs.

A worker spends most of its ~10 s importing TensorFlow, so each test chains scenarios
through one queue to start as few workers as it can.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from tl import runs
from tl.errors import ConfigError, UserError
from tl.files import read_json
from tl.jobs import EXITED, JobManager

from conftest import tiny_config, wait_for

LONG = dict(strategy="scratch", epochs=200, samples_per_class=40, batch_size=8)  # still training when the test acts


@pytest.fixture
def start_manager(runs_dir):
    """Make managers on ``runs_dir``; each is shut down (its workers cancelled) at the end."""
    made = []

    def start(**kwargs):
        manager = JobManager(runs_dir, poll_seconds=0.1, **kwargs)
        made.append(manager)
        return manager

    yield start
    for manager in made:
        manager.shutdown(cancel_running=True)




def written(run) -> dict:
    """The status as written (Run.status() reads a killed worker as failed at once)."""
    return read_json(run.path / "status.json")


def final_status(run) -> dict:
    wait_for(lambda: written(run)["status"] in runs.FINISHED, f"run {run.id} to finish")
    return written(run)


def epochs(run) -> list:
    return [e for e in run.events()[0] if e["type"] == "epoch"]


def wait_first_epoch(run):
    wait_for(lambda: epochs(run), f"the first epoch of run {run.id}")


def test_adoption_settings_and_cancelling_workers_that_are_starting(start_manager, runs_dir, monkeypatch,
                                                                    request):
    monkeypatch.setenv("TL_MAX_JOBS", "2")
    manager = start_manager()
    assert manager.max_parallel == 2
    manager.shutdown()
    monkeypatch.setenv("TL_MAX_JOBS", "0")
    with pytest.raises(ConfigError, match="TL_MAX_JOBS"):
        JobManager(runs_dir)
    monkeypatch.delenv("TL_MAX_JOBS")

    # Ids sort the other way round from creation times: the queue follows creation.
    older = runs.create(tiny_config(), runs_dir, run_id="b-older")
    older.set_status("queued", created=1.0)
    newer = runs.create(tiny_config(), runs_dir, run_id="a-newer")
    # A worker left by an earlier app process (a stand-in that sleeps) keeps its slot...
    live = runs.create(tiny_config(), runs_dir, run_id="d-live")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    request.addfinalizer(sleeper.kill)
    live.set_status("running", pid=sleeper.pid)
    # ... and one whose process is gone is marked failed for good.
    dead = runs.create(tiny_config(), runs_dir, run_id="c-dead")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead.set_status("running", pid=gone.pid)

    manager = start_manager(max_parallel=1)
    assert written(dead)["status"] == "failed" and "stopped unexpectedly" in written(dead)["reason"]
    assert manager.running() == ["d-live"] and manager.queue() == ["b-older", "a-newer"]
    assert manager.position("a-newer") == 2 and manager.position("d-live") is None

    folders = sorted(runs_dir.iterdir())
    with pytest.raises(UserError):
        manager.submit(tiny_config(dataset="folder", data_dir=str(runs_dir / "no-such-folder")))
    assert sorted(runs_dir.iterdir()) == folders
    manager.cancel("no-such-run")
    assert manager.position("no-such-run") is None

    manager.cancel("d-live")
    assert sleeper.wait(timeout=30) == -signal.SIGTERM
    wait_for(lambda: manager.running() == ["b-older"], "the first queued run to start")
    assert written(live)["status"] == "cancelled"
    assert written(older)["status"] == "running" and written(older)["pid"] > 0

    # Cancelled while still importing TensorFlow: the worker dies on SIGTERM, and the
    # manager records a cancel, not a crash; the next queued run starts.
    manager.cancel("b-older")
    status = final_status(older)
    assert status["status"] == "cancelled" and status["reason"] == "Stopped by the user.", status
    wait_for(lambda: manager.running() == ["a-newer"], "the next run to start")
    manager.shutdown(cancel_running=True)
    assert manager.running() == [] and final_status(newer)["status"] == "cancelled"
    assert not epochs(older) and not epochs(newer)


@pytest.mark.slow
def test_queue_runs_one_at_a_time_in_order(start_manager, runs_dir):
    adopted = runs.create(tiny_config(name="made before the manager"), runs_dir)
    manager = start_manager(max_parallel=1)
    assert manager.running() == [adopted.id]

    second = manager.submit(tiny_config(name="second"))
    third = manager.submit(tiny_config(name="third"))
    assert second.status()["status"] == "queued" and adopted.status()["status"] == "running"
    assert (manager.position(second.id), manager.position(third.id)) == (1, 2)

    manager.cancel(third.id)
    assert written(third)["status"] == "cancelled"
    assert written(third)["reason"] == "Cancelled before it started."
    assert manager.queue() == [second.id] and manager.position(second.id) == 1

    first_done, second_done = final_status(adopted), final_status(second)
    assert first_done["status"] == "done" and second_done["status"] == "done", (first_done, second_done)
    assert second_done["started"] >= first_done["finished"]
    assert adopted.metrics["test_accuracy"] is not None and (second.path / "worker.log").exists()
    assert written(third)["status"] == "cancelled" and "pid" not in written(third) and not epochs(third)


@pytest.mark.slow
def test_cancel_running_then_killed_worker_fails_and_the_queue_goes_on(start_manager):
    manager = start_manager(max_parallel=1)
    cancelled = manager.submit(tiny_config(name="cancelled", **LONG))
    killed = manager.submit(tiny_config(name="killed", **LONG))
    last = manager.submit(tiny_config(name="last"))

    wait_first_epoch(cancelled)
    manager.cancel(cancelled.id)
    status = final_status(cancelled)
    assert status["status"] == "cancelled" and status["reason"] == "Stopped by the user.", status
    assert len(cancelled.history) >= 1

    wait_first_epoch(killed)
    os.kill(killed.status()["pid"], signal.SIGKILL)
    status = final_status(killed)
    assert status["status"] == "failed", status
    assert status["reason"] == EXITED.format(code=-signal.SIGKILL)
    assert "exited unexpectedly (exit code -9); its progress so far is kept." in status["reason"]
    assert epochs(killed) and len(killed.history) >= 1

    status = final_status(last)
    assert status["status"] == "done", status
    wait_for(lambda: manager.running() == [], "the last worker to be reaped")
    assert manager.queue() == []


def test_a_queued_run_is_claimed_by_one_manager_only(runs_dir):
    from tl.jobs import _claim

    run = runs.create(tiny_config(), runs_dir)
    assert _claim(run) is True
    assert _claim(run) is False  # a second manager on the same folder skips it


@pytest.mark.slow
def test_workers_never_join_a_cluster_even_when_the_app_has_tf_config(start_manager, monkeypatch):
    """An app started in a shell set up for a cluster run (TF_CONFIG exported) still trains its
    runs on this machine: its workers' environment has no TF_CONFIG (a worker that kept it would
    wait for the cluster's other workers for ever)."""
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:9", "127.0.0.1:10"]},
                                                "task": {"type": "worker", "index": 0}}))
    environments = []
    popen = subprocess.Popen

    def spy(command, **kwargs):
        environments.append(kwargs.get("env"))
        return popen(command, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    run = start_manager().submit(tiny_config())
    assert final_status(run)["status"] == "done"
    assert len(environments) == 1 and "TF_CONFIG" not in environments[0]
    assert environments[0]["PATH"] == os.environ["PATH"]
    assert next(e for e in run.events()[0] if e["type"] == "device")["kind"] == "cpu"
