import json
import os
import subprocess
import sys

import pytest

from tl import files, runs
from tl.errors import RunNotFound
from tl.paths import runs_root

from conftest import tiny_config


def test_create_writes_config_and_queued_status(runs_dir):
    run = runs.create(tiny_config(), runs_dir)
    assert run.config == tiny_config()
    assert run.status()["status"] == "queued"
    assert [r.id for r in runs.list_runs(runs_dir)] == [run.id]
    assert not [p for p in runs_dir.iterdir() if p.name.startswith(".")]


def test_runs_root_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runs_root() == tmp_path / "runs"
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "env"))
    assert runs_root() == tmp_path / "env"
    assert runs_root(tmp_path / "flag") == tmp_path / "flag"


def test_get_unknown_or_odd_ids(runs_dir):
    for bad in ("nope", "../etc", ".hidden", ""):
        with pytest.raises(RunNotFound):
            runs.get(bad, runs_dir)


def test_status_events_and_summary(runs_dir):
    run = runs.create(tiny_config(name="first"), runs_dir)
    run.set_status("running", pid=os.getpid(), started=1.0)
    run.event("epoch", epoch=1, loss=0.5)
    run.event("epoch", epoch=2, loss=0.25)
    events, offset = run.events()
    assert [e["epoch"] for e in events] == [1, 2]
    assert run.events(offset) == ([], offset)
    run.set_status("done", test_accuracy=0.9)
    summary = run.summary()
    assert summary["status"] == "done" and summary["name"] == "first"
    assert summary["duration"] > 0


def test_a_running_run_whose_process_died_reads_as_failed(runs_dir):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run = runs.create(tiny_config(), runs_dir)
    run.set_status("running", pid=proc.pid)
    status = run.status()
    assert status["status"] == "failed" and "stopped unexpectedly" in status["reason"]


def test_delete_removes_the_folder(runs_dir):
    run = runs.create(tiny_config(), runs_dir)
    runs.delete(run.id, runs_dir)
    assert not run.path.exists() and runs.list_runs(runs_dir) == []


def test_cancel_marker(runs_dir):
    run = runs.create(tiny_config(), runs_dir)
    assert not run.cancel_requested()
    run.request_cancel()
    assert run.cancel_requested()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "x.json"
    files.atomic_write_json(path, {"a": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        files.atomic_write_json(path, {"a": Unserialisable()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_jsonl_reader_leaves_a_torn_last_line_for_later(tmp_path):
    path = tmp_path / "e.jsonl"
    files.append_jsonl(path, {"n": 1})
    with open(path, "a") as handle:
        handle.write('{"n": 2')  # a write in progress
    records, offset = files.read_jsonl(path)
    assert records == [{"n": 1}]
    with open(path, "a") as handle:
        handle.write("}\n")
    assert files.read_jsonl(path, offset)[0] == [{"n": 2}]
