"""The hostile-input and fault battery: run folders, the job queue, data folders, images,
configs, the feature cache and the disk (the uploads' own battery is test_hostile_ingest.py).

Every case is bounded in time (``SIGALRM``), expects one sentence (one line, no traceback)
where a message is due, and checks that no run is lost or overwritten and nothing is written
outside the folders the case means to use: each test works in an empty current directory
and the repository gains no ``runs`` folder.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tl import cli, datasets, features, jobs, runs, training
from tl.errors import UserError
from tl.paths import cache_root
from tl.processes import process_start

from conftest import REPO, tiny_config, train_run, write_image_folder


CASE_SECONDS = 120


def repo_run_folders() -> set:
    """The run folders in the repository's ``runs/`` (its ``.cache`` left out: tests on the
    other worker that scan a folder with no runs folder given cache the scan there, at any
    moment)."""
    try:
        return {p.name for p in (REPO / "runs").iterdir() if not p.name.startswith(".")}
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def bounded(tmp_path, monkeypatch):
    """Each case in an empty working directory, killed with TimeoutError if it hangs."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    repo_runs = repo_run_folders()

    def timeout(signum, frame):
        raise TimeoutError(f"the case took more than {CASE_SECONDS} s (a hang)")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(CASE_SECONDS)
    try:
        yield cwd
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not list(cwd.iterdir()), f"written into the working directory: {list(cwd.iterdir())}"
    assert repo_run_folders() == repo_runs, "a run folder appeared in the repository's runs/"


def one_sentence(text: str) -> str:
    """The message, checked to be one line of plain words (no traceback, no repr dump)."""
    text = text.strip()
    assert text, "no message at all"
    assert "\n" not in text, f"more than one line: {text!r}"
    assert "Traceback" not in text and not re.match(r"^[A-Za-z.]*(Error|Exception)\b", text), text
    assert text.endswith((".", ".)")), f"not a finished sentence: {text!r}"
    assert len(text) < 600, f"too long for one sentence: {text!r}"
    return text


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return one_sentence(lines[0][len("error: "):])


def tree(root: Path) -> dict:
    """Every path under ``root`` with its size and content hash (folders: None)."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_symlink() or not path.exists():
            found[path] = "link"
        elif path.is_file():
            found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[path] = None
        else:
            found[path] = "special"
    return found


def changed_outside(before: dict, after: dict, *allowed: Path) -> list:
    """Paths added, removed or changed that lie outside every folder in ``allowed``."""
    paths = {p for p in set(before) | set(after) if before.get(p, 0) != after.get(p, 0)}
    return sorted(p for p in paths if not any(p == a or a in p.parents for a in allowed))


# -- a finished run to copy into each case ----------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A runs folder with one finished run (model, history, metrics, labels)."""
    root = tmp_path_factory.mktemp("template") / "runs"
    root.mkdir()
    run = train_run(root, tiny_config(strategy="scratch", name="kept"))
    assert run.status()["status"] == "done"
    return root, run.id


@pytest.fixture
def two_runs(template, tmp_path):
    """``(runs folder, the run to damage, the run that must survive)``: two finished runs."""
    source, run_id = template
    root = tmp_path / "runs"
    shutil.copytree(source, root)
    victim_id = run_id[:-4] + "beef"
    shutil.copytree(root / run_id, root / victim_id)
    return root, runs.Run(root / victim_id), runs.Run(root / run_id)


def fingerprint(run) -> dict:
    return {name: hashlib.sha256((run.path / name).read_bytes()).hexdigest()
            for name in ("model.keras", "metrics.json", "history.json", "status.json")}


def cli_main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- run folders: a damaged file marks that run damaged, the others still list -------------

CORRUPTIONS = {
    "truncated": lambda text: text[: len(text) // 2],
    "null": lambda text: "null",
    "list": lambda text: "[1, 2, 3]",
    "empty": lambda text: "",
    "number": lambda text: "42",
    "binary": lambda text: b"\xff\xfe\x00\x9c garbage",
    "folder": None,  # the file replaced by a folder: cannot be read
}
JSON_FILES = ("config.json", "status.json", "metrics.json", "labels.json")
DAMAGE_CASES = [(name, how) for name in JSON_FILES for how in CORRUPTIONS]


def corrupt(path: Path, how: str) -> None:
    text = path.read_text()
    path.unlink()
    change = CORRUPTIONS[how]
    if change is None:
        path.mkdir()
        return
    value = change(text)
    path.write_bytes(value if isinstance(value, bytes) else value.encode())


@pytest.mark.parametrize("name, how", DAMAGE_CASES, ids=[f"{n}-{h}" for n, h in DAMAGE_CASES])
def test_a_damaged_run_file_marks_that_run_and_every_other_run_still_lists(two_runs, capsys, name, how):
    root, victim, survivor = two_runs
    kept = fingerprint(survivor)
    corrupt(victim.path / name, how)

    code, out, err = cli_main(capsys, "runs", "--runs-dir", root)
    assert code == 0 and not err, err
    rows = [line for line in out.splitlines() if line.startswith(("2", victim.id[:4]))]
    assert any(line.startswith(survivor.id) and " done " in line for line in rows), out
    assert any(line.startswith(victim.id) and " damaged " in line for line in rows), out
    reason = one_sentence(next(line for line in out.splitlines() if line.startswith(f"Run {victim.id} is damaged")))
    assert name in reason

    code, out, err = cli_main(capsys, "runs", "--runs-dir", root, "--json")
    listed = {row["run_id"]: row for row in json.loads(out)}
    assert code == 0 and set(listed) == {victim.id, survivor.id}
    assert listed[survivor.id]["status"] == "done" and listed[survivor.id]["test_accuracy"] is not None
    assert listed[victim.id]["status"] == "damaged" and name in listed[victim.id]["reason"]

    manager = jobs.JobManager(root)  # the Train page's manager: must not raise
    try:
        assert manager.queue() == [] and manager.running() == []
    finally:
        manager.shutdown()
    assert victim.damage() and survivor.damage() is None

    # Export and Classify refuse the damaged run in one sentence naming the file.
    code, out, err = cli_main(capsys, "export", victim.id, "--format", "labels", "--out",
                              root.parent / "labels.txt", "--runs-dir", root)
    assert code == cli.EXIT_USAGE and name in error_line(err)
    assert not (root.parent / "labels.txt").exists()

    runs.delete(victim.id, root)  # deleting a damaged run works
    assert [run.id for run in runs.list_runs(root)] == [survivor.id]
    assert fingerprint(survivor) == kept


@pytest.mark.parametrize("name", ["config.json", "labels.json"])
def test_predict_on_a_run_with_damaged_labels_or_config_is_one_sentence(two_runs, capsys, tmp_path, name):
    root, victim, _ = two_runs
    corrupt(victim.path / name, "truncated")
    image = write_image_folder(tmp_path / "img", {"a": 1, "b": 1}) / "a" / "000.png"
    code, out, err = cli_main(capsys, "predict", victim.id, image, "--runs-dir", root)
    assert code == cli.EXIT_USAGE and name in error_line(err)


def test_an_unreadable_status_file_does_not_stop_predict_on_other_runs(two_runs, capsys, tmp_path):
    root, victim, survivor = two_runs
    corrupt(victim.path / "status.json", "binary")
    image = write_image_folder(tmp_path / "img", {"a": 1, "b": 1}) / "a" / "000.png"
    code, out, err = cli_main(capsys, "predict", survivor.id, image, "--runs-dir", root)
    assert code == 0 and "Transferred head" in out, err
    code, out, err = cli_main(capsys, "predict", victim.id, image, "--runs-dir", root)
    assert code == cli.EXIT_USAGE and "status.json" in error_line(err)


ODD_RECORDS = {
    "unknown status": ("status.json", {"status": "exploded"}, "damaged"),
    "running, pid not a number": ("status.json", {"status": "running", "pid": "abc"}, "failed"),
    "running, pid out of range": ("status.json", {"status": "running", "pid": 2**40}, "failed"),
    "running, pid negative": ("status.json", {"status": "running", "pid": -1}, "failed"),
    "started is text": ("status.json", {"status": "done", "started": "yesterday", "finished": 5}, "done"),
    "config: unknown backbone": ("config.json", {"backbone": "resnet18"}, "damaged"),
    "config: data_dir a number": ("config.json", {"dataset": "folder", "data_dir": 123}, "damaged"),
    "config: tags a string": ("config.json", {"tags": "abc"}, "damaged"),
    "metrics: accuracy is text": ("metrics.json", {"test_accuracy": "high"}, "done"),
    "labels: names not strings": ("labels.json", {"class_names": [1, None]}, "damaged"),
}


@pytest.mark.parametrize("case", list(ODD_RECORDS))
def test_well_formed_json_with_odd_values_lists_every_run(two_runs, capsys, case):
    root, victim, survivor = two_runs
    name, change, expected = ODD_RECORDS[case]
    path = victim.path / name
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, **change}))
    code, out, err = cli_main(capsys, "runs", "--runs-dir", root, "--json")
    listed = {row["run_id"]: row for row in json.loads(out)}
    assert code == 0 and not err
    assert listed[victim.id]["status"] == expected, listed[victim.id]
    assert listed[survivor.id]["status"] == "done"
    code, out, err = cli_main(capsys, "runs", "--runs-dir", root)
    assert code == 0 and victim.id in out and survivor.id in out and not err
    if expected == "damaged":
        assert name in one_sentence(listed[victim.id]["reason"])
    manager = jobs.JobManager(root)
    manager.shutdown()


def test_torn_and_garbage_event_lines_are_skipped(two_runs):
    _, victim, _ = two_runs
    with open(victim.events_path, "ab") as handle:
        handle.write(b"not json\n\xff\xfe\n[1, 2]\n{\"t\": 1, \"type\": \"log\", \"message\": \"after\"}\n{\"t\": 2, ")
    events, offset = victim.events()
    assert events[-1].get("message") == "after"
    assert offset < victim.events_path.stat().st_size  # the torn last line waits for its end


@pytest.mark.parametrize("damage", ["truncated", "zero bytes", "a zip of something else", "a folder"])
def test_a_damaged_model_file_is_one_sentence_for_predict_and_export(two_runs, capsys, tmp_path, damage):
    root, victim, survivor = two_runs
    model = victim.model_path
    data = model.read_bytes()
    model.unlink()
    if damage == "truncated":
        model.write_bytes(data[: len(data) // 3])
    elif damage == "zero bytes":
        model.write_bytes(b"")
    elif damage == "a zip of something else":
        import zipfile

        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("hello.txt", "not a model")
    else:
        model.mkdir()
    image = write_image_folder(tmp_path / "img", {"a": 1, "b": 1}) / "a" / "000.png"
    code, out, err = cli_main(capsys, "predict", victim.id, image, "--runs-dir", root)
    message = error_line(err)
    assert code == cli.EXIT_USAGE and "model.keras" in message and "train" in message
    assert "File not found" not in message and "Please ensure" not in message
    code, out, err = cli_main(capsys, "export", victim.id, "--format", "keras", "--out", tmp_path / "m.keras",
                              "--runs-dir", root)
    assert code == cli.EXIT_USAGE and "model.keras" in error_line(err)
    assert not (tmp_path / "m.keras").exists()
    assert survivor.status()["status"] == "done"


MISMATCHED_CONFIGS = {
    "empty": lambda config: {},  # valid: every default (efficientnet_lite0, feature_extraction, 224 px)
    "another backbone": lambda config: {**config, "backbone": "perceptron"},
    "another image size": lambda config: {**config, "image_size": 24},
}


@pytest.mark.parametrize("case", list(MISMATCHED_CONFIGS))
def test_a_config_that_does_not_describe_the_model_is_one_sentence(two_runs, capsys, tmp_path, case):
    """config.json is valid but names another backbone or size than model.keras holds:
    classify and export say so in one sentence; the run still lists; the other still works."""
    root, victim, survivor = two_runs
    path = victim.path / "config.json"
    path.write_text(json.dumps(MISMATCHED_CONFIGS[case](json.loads(path.read_text()))))
    image = write_image_folder(tmp_path / "img", {"a": 1, "b": 1}) / "a" / "000.png"
    code, out, err = cli_main(capsys, "predict", victim.id, image, "--runs-dir", root)
    message = error_line(err)
    assert code == cli.EXIT_USAGE and victim.id in message and "does not describe its model.keras" in message
    assert "small_cnn backbone trained with strategy scratch, 16 px" in message and "restore the config.json" in message
    code, out, err = cli_main(capsys, "export", victim.id, "--format", "tflite", "--out", tmp_path / "m.tflite",
                              "--runs-dir", root)
    assert code == cli.EXIT_USAGE and "does not describe its model.keras" in error_line(err)
    assert not (tmp_path / "m.tflite").exists()
    code, out, err = cli_main(capsys, "runs", "--runs-dir", root, "--json")
    assert code == 0 and {row["run_id"] for row in json.loads(out)} == {victim.id, survivor.id}
    code, out, err = cli_main(capsys, "predict", survivor.id, image, "--runs-dir", root)
    assert code == 0 and "Transferred head" in out, err


def test_a_file_named_like_a_run_and_a_run_without_config_are_not_runs(two_runs, capsys):
    root, victim, survivor = two_runs
    (root / "20990101-000000-x-y-0000").write_text("not a folder")
    (root / "20990101-000000-x-y-0001").mkdir()
    code, out, err = cli_main(capsys, "runs", "--runs-dir", root, "--json")
    assert code == 0 and {row["run_id"] for row in json.loads(out)} == {victim.id, survivor.id}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a 0o000 folder")
def test_an_unreadable_run_folder_is_listed_as_damaged(two_runs, capsys):
    root, victim, survivor = two_runs
    victim.path.chmod(0)
    try:
        code, out, err = cli_main(capsys, "runs", "--runs-dir", root, "--json")
        listed = {row["run_id"]: row for row in json.loads(out)}
        assert listed[victim.id]["status"] == "damaged" and listed[survivor.id]["status"] == "done"
    finally:
        victim.path.chmod(0o755)


# -- training never starts on a run that is not queued --------------------------------------

@pytest.mark.parametrize("state", ["done", "failed", "cancelled", "damaged", "running elsewhere"])
def test_a_worker_on_a_run_that_is_not_queued_is_refused_and_changes_nothing(two_runs, capsys, state):
    root, victim, survivor = two_runs
    sleeper = None
    if state in ("failed", "cancelled"):
        victim.set_status(state, reason="earlier")
    elif state == "damaged":
        corrupt(victim.path / "status.json", "null")
    elif state == "running elsewhere":
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        victim.set_status("running", pid=sleeper.pid)
    before = tree(root)
    try:
        code, out, err = cli_main(capsys, "worker", victim.id, "--runs-dir", root)
    finally:
        if sleeper:
            sleeper.kill()
            sleeper.wait()
    message = error_line(err)
    assert code == cli.EXIT_USAGE and victim.id in message and "not trained" in message
    assert tree(root) == before, "the refused worker wrote into the runs folder"


@pytest.mark.parametrize("run_id", ["no-such-run", "../etc", ".hidden", ""])
def test_a_worker_on_an_unknown_run_is_one_sentence(two_runs, capsys, run_id):
    root, _, _ = two_runs
    code, out, err = cli_main(capsys, "worker", run_id, "--runs-dir", root)
    assert code == cli.EXIT_USAGE and "There is no run" in error_line(err)


def test_a_stale_claim_and_a_dead_owners_claim_do_not_keep_runs_queued(tmp_path, monkeypatch):
    """A manager killed between claiming and starting leaves a claim marker; a restarted
    app still starts every queued run, oldest first. (The claim rule is under test, so the
    spawn is stubbed; test_jobs and the end-to-end browser test train through real workers.)"""
    root = tmp_path / "runs"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    first = training.prepare(tiny_config(strategy="scratch", name="claimed by a dead pid"), root)
    (first.path / "claimed").write_text(json.dumps({"pid": dead.pid, "pid_start": 1}))
    second = training.prepare(tiny_config(strategy="scratch", name="old ownerless claim"), root)
    (second.path / "claimed").write_text("")
    old = time.time() - 2 * jobs.STALE_CLAIM_SECONDS
    os.utime(second.path / "claimed", (old, old))
    started = []
    monkeypatch.setattr(jobs.JobManager, "_spawn", lambda self, run: started.append(run.id))
    manager = jobs.JobManager(root, max_parallel=1, poll_seconds=0.1)
    manager.shutdown()
    assert started == [first.id, second.id]
    for run in (first, second):  # claimed anew, by this manager
        assert json.loads((run.path / "claimed").read_text())["pid"] == os.getpid()


def test_a_fresh_claim_without_owner_and_a_live_claim_are_respected(runs_dir):
    run = runs.create(tiny_config(), runs_dir)
    (run.path / "claimed").write_text("")  # another manager is writing its owner right now
    assert not jobs.claim(run)
    (run.path / "claimed").write_text(json.dumps({"pid": os.getpid(), "pid_start": process_start(os.getpid())}))
    assert not jobs.claim(run)
    assert run.status()["status"] == "queued"


def test_a_reused_pid_does_not_hold_the_device_slot(runs_dir, monkeypatch):
    """The pid recorded for a running run now belongs to another process (started at
    another time): the run reads failed and the queue moves on."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stuck = runs.create(tiny_config(name="stuck"), runs_dir)
        stuck.set_status("running", pid=stranger.pid, pid_start=(process_start(stranger.pid) or 0) + 12345)
        waiting = runs.create(tiny_config(name="waiting"), runs_dir)
        started = []
        monkeypatch.setattr(jobs.JobManager, "_spawn", lambda self, run: started.append(run.id))
        manager = jobs.JobManager(runs_dir, max_parallel=1, poll_seconds=0.1)
        manager.shutdown()
        assert started == [waiting.id]
        assert stuck.status()["status"] == "failed" and "stopped unexpectedly" in stuck.status()["reason"]
        assert stranger.poll() is None, "the stranger process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def _running_as_an_older_version_wrote_it(run, pid, started) -> None:
    """status.json as versions before start times were kept wrote it: a pid, no pid_start."""
    (run.path / "status.json").write_text(json.dumps({"status": "running", "pid": pid, "started": started,
                                                       "created": started, "updated": started}))


def test_an_old_running_record_whose_pid_is_a_younger_stranger_does_not_hold_the_slot(runs_dir, monkeypatch):
    """An older version left a run running with a pid and no pid_start; that pid now
    belongs to another program, started after the run: the run reads failed (a sentence),
    the queue moves on, and the stranger is never signalled."""
    stuck = runs.create(tiny_config(name="stuck"), runs_dir)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        _running_as_an_older_version_wrote_it(stuck, stranger.pid, time.time() - 600)
        waiting = runs.create(tiny_config(name="waiting"), runs_dir)
        started = []
        monkeypatch.setattr(jobs.JobManager, "_spawn", lambda self, run: started.append(run.id))
        manager = jobs.JobManager(runs_dir, max_parallel=1, poll_seconds=0.1)
        manager.cancel(stuck.id)  # not its worker: nothing to signal
        manager.shutdown()
        assert started == [waiting.id]
        assert stuck.status()["status"] == "failed"
        one_sentence(stuck.status()["reason"])
        assert stranger.poll() is None, "the stranger process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_an_old_running_record_whose_worker_lives_still_holds_the_slot(runs_dir, monkeypatch):
    """The same record with its real worker alive (started when the run did: the job manager
    writes "started" just after it starts the worker) keeps the device slot."""
    worker_started = time.time()
    worker = subprocess.Popen(["sleep", "60"])
    try:
        running = runs.create(tiny_config(name="running"), runs_dir)
        _running_as_an_older_version_wrote_it(running, worker.pid, worker_started)
        runs.create(tiny_config(name="waiting"), runs_dir)
        started = []
        monkeypatch.setattr(jobs.JobManager, "_spawn", lambda self, run: started.append(run.id))
        manager = jobs.JobManager(runs_dir, max_parallel=1, poll_seconds=0.1)
        manager.shutdown()
        assert started == [] and manager.running() == [running.id]
        assert running.status()["status"] == "running"
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()


def test_leftovers_of_killed_processes_are_removed_at_start(runs_dir):
    (runs_dir / ".20990101-old.deleting").mkdir()
    creating = runs_dir / ".20990101-new.creating"
    creating.mkdir()
    (runs_dir / ".20990101-fresh.creating").mkdir()
    old = time.time() - 3600
    os.utime(creating, (old, old))
    manager = jobs.JobManager(runs_dir)
    manager.shutdown()
    assert sorted(p.name for p in runs_dir.iterdir()) == [".20990101-fresh.creating"]


# -- images: undecodable files are skipped, named, never trained on; only regular files ----

def _truncated_png(folder):
    data = (folder / "a" / "000.png").read_bytes()
    return data[: len(data) // 2]


def _truncated_jpeg(folder):
    from PIL import Image

    path = folder / "tmp.jpg"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.unlink()
    return data[: len(data) // 2]


def _png_bomb(folder):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


BAD_IMAGES = {
    "truncated png": _truncated_png,
    "truncated jpeg": _truncated_jpeg,
    "random bytes": lambda folder: os.urandom(2000),
    "zero bytes": lambda folder: b"",
    "html named png": lambda folder: b"<html><body>404 not found</body></html>",
    "decompression bomb": _png_bomb,
    "fifo": "fifo",
    "broken link": "broken link",
    "link to a fifo": "link to a fifo",
}


def _plant(folder: Path, kind: str) -> Path:
    bad = folder / "a" / "bad.png"
    maker = BAD_IMAGES[kind]
    if maker == "fifo":
        os.mkfifo(bad)
    elif maker == "broken link":
        bad.symlink_to(folder / "nowhere.png")
    elif maker == "link to a fifo":
        os.mkfifo(folder / "pipe")
        bad.symlink_to(folder / "pipe")
    else:
        bad.write_bytes(maker(folder))
    return bad


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_a_broken_file_in_a_class_folder_is_skipped_and_named(tmp_path, kind):
    folder = write_image_folder(tmp_path / "data", {"a": 4, "b": 4})
    _plant(folder, kind)
    runs_dir = tmp_path / "runs"
    data = datasets.load(tiny_config(dataset="folder", data_dir=str(folder), samples_per_class=0), runs_dir)
    assert len(data) == 8
    assert [name for name, _ in data.skipped] == [os.path.join("a", "bad.png")]
    message = one_sentence(datasets.skipped_message(data.skipped))
    assert "a/bad.png" in message and "not trained on" in message


@pytest.mark.slow
def test_training_on_a_folder_with_a_truncated_image_logs_its_name(tmp_path):
    folder = write_image_folder(tmp_path / "data", {"a": 4, "b": 4})
    _plant(folder, "truncated png")
    runs_dir = tmp_path / "runs"
    run = train_run(runs_dir, tiny_config(dataset="folder", data_dir=str(folder), samples_per_class=0,
                                          strategy="scratch"))
    assert run.status()["status"] == "done"
    logs = [e["message"] for e in run.events()[0] if e["type"] == "log"]
    assert any("not trained on: a/bad.png" in line for line in logs), logs
    split = json.loads((run.path / "split.json").read_text())
    assert "a/bad.png" not in json.dumps(split)


@pytest.mark.parametrize("kind", ["fifo", "missing", "a folder", "truncated png", "zero bytes"])
def test_predict_gives_a_bad_file_its_own_line_and_classifies_the_rest(two_runs, capsys, tmp_path, kind):
    root, _, survivor = two_runs
    folder = write_image_folder(tmp_path / "img", {"a": 2, "b": 1})
    good = folder / "a" / "000.png"
    if kind == "missing":
        bad = folder / "a" / "missing.png"
    elif kind == "a folder":
        bad = folder / "b"
    else:
        bad = _plant(folder, kind)
    code, out, err = cli_main(capsys, "predict", survivor.id, bad, good, "--runs-dir", root)
    assert code == cli.EXIT_USAGE and str(good) in out and "Transferred head" in out
    assert bad.name in error_line(err)


def test_a_data_folder_that_is_a_file_or_unreadable_is_one_sentence(tmp_path, capsys):
    file = tmp_path / "photos.zip"
    file.write_bytes(b"PK")
    runs_dir = tmp_path / "runs"
    for data_dir, words in ((file, "is a file, not a folder"), (tmp_path / "nowhere", "does not exist")):
        code, out, err = cli_main(capsys, "train", "--dataset", "folder", "--data-dir", data_dir,
                                  "--runs-dir", runs_dir)
        assert code == cli.EXIT_USAGE and words in error_line(err)
    assert not runs_dir.exists() or not list(runs_dir.iterdir())


# -- configs -------------------------------------------------------------------------------

BAD_CONFIGS = {
    "data_dir a number": ({"dataset": "folder", "data_dir": 123}, "data_dir"),
    "tags a string": ({"tags": "abc"}, "tags"),
    "name a number": ({"name": 5}, "name"),
    "learning rate NaN": ({"learning_rate": "NaN"}, "learning_rate"),
    "epochs negative": ({"epochs": -1}, "epochs"),
    "unknown key": ({"epoch": 3}, "epoch"),
    "unknown backbone": ({"backbone": "resnet18"}, "backbone"),
    "image size huge": ({"image_size": 10**9}, "image_size"),
    "batch size zero": ({"batch_size": 0}, "batch_size"),
    "folder without data_dir": ({"dataset": "folder"}, "data_dir"),
    "strategy null": ({"strategy": None}, "strategy"),
    "samples negative": ({"samples_per_class": -3}, "samples_per_class"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_file_is_one_sentence_and_creates_no_run(tmp_path, capsys, case):
    change, field = BAD_CONFIGS[case]
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**tiny_config().to_dict(), **change}))
    runs_dir = tmp_path / "runs"
    code, out, err = cli_main(capsys, "train", "--config", path, "--runs-dir", runs_dir)
    assert code == cli.EXIT_USAGE and field in error_line(err)
    assert not runs_dir.exists() or not list(runs_dir.iterdir())


@pytest.mark.parametrize("content", ["not json", "[1, 2]", "null", "folder", "missing"])
def test_a_config_file_that_is_not_a_json_object_is_one_sentence(tmp_path, capsys, content):
    path = tmp_path / "config.json"
    if content == "folder":
        path.mkdir()
    elif content != "missing":
        path.write_text(content)
    code, out, err = cli_main(capsys, "train", "--config", path, "--runs-dir", tmp_path / "runs")
    assert code == cli.EXIT_USAGE and "config" in error_line(err).lower()
    assert not (tmp_path / "runs").exists()


# -- the runs folder and the disk -----------------------------------------------------------

def test_a_runs_folder_that_is_a_file_or_under_one_is_one_sentence(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    for where in (blocker, blocker / "inside"):
        code, out, err = cli_main(capsys, "train", "--dataset", "synthetic", "--backbone", "small_cnn",
                                  "--weights", "none", "--image-size", "16", "--runs-dir", where)
        assert code == cli.EXIT_USAGE and str(blocker) in error_line(err)
        code, out, err = cli_main(capsys, "runs", "--runs-dir", where)
        assert code == cli.EXIT_USAGE and str(blocker) in error_line(err)
        with pytest.raises(UserError) as caught:
            jobs.JobManager(where)
        assert str(blocker) in one_sentence(str(caught.value))
    assert blocker.read_text() == "a file where the runs folder should be"


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "space"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission"), (errno.ENAMETOOLONG, "name")])
def test_the_runs_folder_failing_when_a_run_is_created_is_one_sentence(runs_dir, monkeypatch, code, words):
    real_mkdir = os.mkdir

    def failing(path, *args, **kwargs):
        if str(path).endswith(".creating"):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", failing)
    with pytest.raises(UserError) as caught:
        training.prepare(tiny_config(), runs_dir)
    assert words in one_sentence(str(caught.value)).lower()
    assert list(runs_dir.iterdir()) == []


def _disk_full_on(monkeypatch, name):
    real = runs.atomic_write_json

    def failing(path, obj, *args, **kwargs):
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, obj, *args, **kwargs)

    monkeypatch.setattr(runs, "atomic_write_json", failing)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["history.json", "metrics.json", "labels.json"])
def test_disk_full_during_training_fails_the_run_with_a_sentence(runs_dir, monkeypatch, target):
    _disk_full_on(monkeypatch, target)
    run = training.prepare(tiny_config(strategy="scratch"), runs_dir)
    status = training.execute(run, runs_dir)
    assert status["status"] == "failed", status
    assert "full" in one_sentence(status["reason"]).lower()
    assert run.status()["status"] == "failed"
    assert not list(run.path.glob("*.tmp*")) and not list(run.path.glob(".*tmp*"))


@pytest.mark.slow
def test_disk_full_while_saving_the_model_leaves_no_partial_file(runs_dir, monkeypatch):
    import keras

    def failing_save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PK half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(keras.Model, "save", failing_save)
    run = training.prepare(tiny_config(strategy="scratch"), runs_dir)
    status = training.execute(run, runs_dir)
    assert status["status"] == "failed" and "full" in one_sentence(status["reason"]).lower()
    assert sorted(p.name for p in run.path.iterdir() if "model" in p.name) == []


@pytest.mark.slow
def test_the_run_folder_deleted_mid_training_ends_quietly(runs_dir):
    run = training.prepare(tiny_config(strategy="scratch", epochs=3), runs_dir)

    def delete_at_first_epoch(event):
        if event["type"] == "epoch" and run.path.exists():
            shutil.rmtree(run.path)

    status = training.execute(run, runs_dir, on_event=delete_at_first_epoch)
    assert status["status"] == "deleted"
    assert not run.path.exists()
    assert runs.list_runs(runs_dir) == []


@pytest.mark.parametrize("fault", [errno.ENOSPC, errno.EROFS])
def test_an_export_that_cannot_be_written_is_one_sentence_and_leaves_nothing(two_runs, capsys, tmp_path,
                                                                            monkeypatch, fault):
    from tl import export

    root, _, survivor = two_runs
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def failing(path, data):
        raise OSError(fault, os.strerror(fault), str(path))

    monkeypatch.setattr(export, "atomic_write_bytes", failing)
    code, out, err = cli_main(capsys, "export", survivor.id, "--format", "keras", "--out", out_dir,
                              "--runs-dir", root)
    assert code == cli.EXIT_USAGE and str(out_dir) in error_line(err)
    assert list(out_dir.iterdir()) == []


def test_export_into_a_missing_folder_or_of_an_unfinished_run_is_one_sentence(two_runs, capsys, tmp_path):
    root, victim, survivor = two_runs
    code, out, err = cli_main(capsys, "export", survivor.id, "--format", "card", "--out",
                              tmp_path / "no" / "card.md", "--runs-dir", root)
    assert code == cli.EXIT_USAGE and "does not exist" in error_line(err)
    victim.set_status("failed", reason="earlier")
    code, out, err = cli_main(capsys, "export", victim.id, "--format", "card", "--out", tmp_path,
                              "--runs-dir", root)
    assert code == cli.EXIT_USAGE and "only a finished run" in error_line(err)


# -- the feature cache ----------------------------------------------------------------------

def _damage_features(folder: Path, how: str) -> None:
    [path] = folder.glob("part-*.npy")  # the one part the first run wrote
    data = bytearray(path.read_bytes())
    if how == "flipped bytes":
        data[-16:] = bytes(b ^ 0xFF for b in data[-16:])
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "bad header":
        path.write_bytes(b"\x93NUMPY garbage" + bytes(data[14:]))
    elif how == "meta not json":
        path.with_suffix(".json").write_text("{")


@pytest.mark.parametrize("how", ["flipped bytes", "truncated", "bad header", "meta not json"])
def test_a_corrupt_feature_cache_entry_is_extracted_again(runs_dir, how):
    cfg = tiny_config(strategy="feature_extraction")
    first = train_run(runs_dir, cfg)
    assert first.status()["status"] == "done"
    [entry] = list((cache_root(runs_dir) / "features").iterdir())
    _damage_features(entry, how)
    second = train_run(runs_dir, cfg)
    assert second.status()["status"] == "done", second.status().get("reason")
    events = second.events()[0]
    assert any("were damaged" in e.get("message", "") and "extracting them again" in e["message"]
               for e in events if e["type"] == "log")
    assert [e["cache"] for e in events if e["type"] == "features"][0] == "miss"
    assert second.metrics["test_accuracy"] == first.metrics["test_accuracy"]
    key = next(e["key"] for e in events if e["type"] == "features")
    assert features.lookup(cache_root(runs_dir), key) is not None


def test_a_dead_extractions_temporary_file_is_removed(runs_dir):
    cfg = tiny_config(strategy="feature_extraction")
    first = train_run(runs_dir, cfg)
    [entry] = list((cache_root(runs_dir) / "features").iterdir())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = entry / f".features.{dead.pid}.tmp"
    leftover.write_bytes(b"\0" * 4096)
    for part in entry.glob("part-*"):  # so the second run extracts again, past the leftover
        part.unlink()
    second = train_run(runs_dir, cfg)
    assert second.status()["status"] == "done" and first.status()["status"] == "done"
    assert not leftover.exists()


# -- caches live under the runs folder in use ------------------------------------------------

def test_the_folder_scan_cache_lives_under_the_runs_folder(tmp_path, bounded):
    folder = write_image_folder(tmp_path / "data", {"a": 3, "b": 3})
    runs_dir = tmp_path / "runs"
    before = tree(tmp_path)
    datasets.load(tiny_config(dataset="folder", data_dir=str(folder), samples_per_class=0), runs_dir)
    after = tree(tmp_path)
    assert changed_outside(before, after, runs_dir) == []
    assert list((runs_dir / ".cache" / "scans").glob("*.json"))


def test_a_refused_folder_writes_nothing_anywhere(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "data", {"only": 3})
    runs_dir = tmp_path / "runs"
    before = tree(tmp_path)
    code, out, err = cli_main(capsys, "train", "--dataset", "folder", "--data-dir", folder, "--runs-dir", runs_dir)
    assert code == cli.EXIT_USAGE and "only one class" in error_line(err)
    assert changed_outside(before, tree(tmp_path), runs_dir / ".cache") == []
