"""Training across machines (tl/cluster.py): two ``python -m tl train`` processes on
127.0.0.1, joined by TF_CONFIG, train one run; only the chief writes it. Plus the cluster
description read from TF_CONFIG, and what refuses to run in a cluster."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tl import cli, cluster, runs
from tl.errors import UserError
from tl.paths import cache_root

from conftest import REPO

PROCESS_SECONDS = 300  # each worker's limit: one whose peer died would otherwise wait for it for ever
SMALL_FINE_TUNE = ["--strategy", "fine_tune", "--backbone", "small_cnn", "--weights", "none",
                   "--dataset", "synthetic", "--samples-per-class", "10", "--synthetic-classes", "4",
                   "--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "1", "--fine-tune-layers", "2",
                   "--min-steps", "0", "--early-stopping", "0", "--json"]


def free_ports(count: int) -> list:
    """Ports free on 127.0.0.1 now (bound to port 0, then released for the workers)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports, index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def tree(root) -> list:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.slow
def test_two_workers_train_one_run_that_only_the_chief_writes(tmp_path):
    runs_dir = tmp_path / "runs"  # both are given it, as on one disk: the worker must leave it alone
    temp = {index: tmp_path / f"tmp{index}" for index in (0, 1)}
    ports = free_ports(2)
    processes = []
    for index in (0, 1):
        temp[index].mkdir()
        env = {**os.environ, "TF_CONFIG": tf_config(ports, index), "TMPDIR": str(temp[index]),
               # Two processes on a small CPU: one op thread each (inter-op threads stay: the
               # collectives wait on them).
               "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1"}
        processes.append(subprocess.Popen([sys.executable, "-m", "tl", "train", *SMALL_FINE_TUNE,
                                           "--runs-dir", str(runs_dir)], cwd=REPO, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline = time.time() + PROCESS_SECONDS
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=max(1.0, deadline - time.time())))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        tails = [process.communicate()[1][-3000:] for process in processes]
        pytest.fail(f"The workers did not finish in {PROCESS_SECONDS} s:\n" + "\n----\n".join(tails))

    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    chief, worker = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert chief["status"] == worker["status"] == "done"
    assert (chief["role"], worker["role"]) == ("chief", "worker") and chief["workers"] == worker["workers"] == 2
    assert worker["run_id"] == chief["run_id"] and worker["run_dir"] is None  # it trained the chief's run
    assert worker["test_accuracy"] == chief["test_accuracy"]  # one model, tested together
    assert "it trains the chief's run and writes only into " + str(temp[1]) in outputs[1][1]

    run = runs.get(chief["run_id"], runs_dir)
    assert run.status()["status"] == "done" and run.model_problem() is None
    events = run.events()[0]
    device = next(e for e in events if e["type"] == "device")
    assert (device["kind"], device["workers"], device["role"], device["replicas"]) == ("multi-worker", 2, "chief", 2)
    assert next(e for e in events if e["type"] == "cluster")["chief_run_id"] == run.id
    assert [e["phase"] for e in events if e["type"] == "phase"] == ["head", "fine_tune"]

    # The runs folder holds the chief's run and its cache entries only: no second run, no
    # temporaries; the worker's own folder is gone.
    assert [r.id for r in runs.list_runs(runs_dir)] == [run.id]
    found = tree(runs_dir)
    assert {path.split("/")[0] for path in found} == {run.id, ".cache"}
    key = next(e["key"] for e in events if e["type"] == "features" and e["cache"] == "stored")
    cached = [p.split("/", 3)[3] for p in found if p.startswith(".cache/features/") and p.count("/") >= 3]
    assert len({p.split("/")[2] for p in found if p.startswith(".cache/features/")}) == 1  # one setting
    assert f"views/{key}.json" in cached and len([p for p in cached if p.startswith("part-")]) == 2
    assert not [path for path in found if ".tmp" in path or "/." in "/" + path.removeprefix(".cache")]
    assert list(temp[1].iterdir()) == []


def test_role_from_tf_config():
    two = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    assert cluster.role({}) is None
    assert cluster.role({"TF_CONFIG": json.dumps(two)}) == cluster.Role("worker", 1, 2, chief=False)
    two["task"]["index"] = 0
    assert cluster.role({"TF_CONFIG": json.dumps(two)}).chief
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
    found = cluster.role({"TF_CONFIG": json.dumps(with_chief)})
    assert not found.chief and found.workers == 3 and found.as_record() == {"workers": 3, "role": "worker",
                                                                           "task": "worker:0"}
    with_chief["task"] = {"type": "chief", "index": 0}
    assert cluster.role({"TF_CONFIG": json.dumps(with_chief)}).chief


@pytest.mark.parametrize("raw, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', 'needs a "cluster" and a "task" object'),
    ('{"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}', "'ps'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "names task worker 1"),
])
def test_a_bad_tf_config_is_one_sentence(raw, message):
    with pytest.raises(UserError, match="TF_CONFIG") as caught:
        cluster.role({"TF_CONFIG": raw})
    assert message in str(caught.value) and "Training across machines" in str(caught.value)


def test_environment_without_cluster_and_a_workers_own_folders(tmp_path, monkeypatch):
    assert cluster.environment_without_cluster({"TF_CONFIG": "{}", "PATH": "/bin"}) == {"PATH": "/bin"}
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    with cluster.worker_folders() as folder:
        assert folder.parent == tmp_path and cache_root(folder) == folder / ".cache"
        (folder / "x").write_text("written")
    assert not folder.exists() and os.environ["TL_CACHE_DIR"] == str(tmp_path / "cache")


def test_outside_a_cluster_every_agreement_is_the_process_own(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster.every_worker(True) is True and cluster.every_worker(0) is False
    assert cluster.chiefs_text("run-1") == "run-1"
    cluster.take_chiefs_weights(None)  # not even looked at


def test_what_a_cluster_cannot_run_is_refused_on_every_worker(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    code = cli.main(["train", "--weights", "run:earlier", "--runs-dir", str(tmp_path)])
    assert code == cli.EXIT_USAGE and "cannot train across machines" in capsys.readouterr().err
    assert cli.main(["compare", "--runs-dir", str(tmp_path)]) == cli.EXIT_USAGE
    assert "compare trains on this machine only" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
