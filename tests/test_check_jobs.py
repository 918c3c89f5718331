"""Checks in the background (tl/check_jobs.py): a real check in its own process from start
to result, Stop, a process that died, and damaged status files."""

import io
import time

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tl import check_jobs, datasets
from tl.check import check_config
from tl.data import made
from tl.files import atomic_write_json



def crops(picture, n, seed):
    image = getattr(skimage.data, picture)()
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    out = []
    for i in range(n):
        y, x = rng.integers(0, h - 120), rng.integers(0, w - 120)
        buffer = io.BytesIO()
        Image.fromarray(image[y:y + 120, x:x + 120]).save(buffer, "JPEG")
        out.append((f"{picture}-{i}.jpg", buffer.getvalue()))
    return out


@pytest.fixture
def pets(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("TL_RUNS_DIR", str(runs))
    monkeypatch.delenv("TL_DATA_DIR", raising=False)
    made.create_dataset("Pets", runs)
    made.add_photos("Pets", "cat", crops("chelsea", 8, 0), runs)
    # One coffee photo filed as a cat: the check should name it.
    made.add_photos("Pets", "coffee", crops("coffee", 8, 1), runs)
    planted = crops("coffee", 1, 99)
    made.add_photos("Pets", "cat", planted, runs)
    return runs, made.find("Pets", runs)


def wait(job, seconds=300):
    deadline = time.time() + seconds
    while job.status()["status"] in check_jobs.ACTIVE:
        assert time.time() < deadline, job.progress()
        time.sleep(0.5)
    return job.status()


@pytest.mark.slow
def test_a_check_runs_in_its_own_process_and_is_found_again(pets):
    runs, dataset = pets
    cfg = check_config("last", dataset=dataset.ref, image_size=96)
    data = datasets.load(cfg, runs)
    assert check_jobs.find(cfg, data.fingerprint, runs) is None
    job = check_jobs.start(cfg, data.fingerprint, runs)
    assert job.status()["status"] == "running" and job.status()["pid"]
    assert wait(job)["status"] == "done", job.status()
    share, text = job.progress()
    assert share >= 0.95 and text
    result = job.result()
    assert len(result.images) == 17
    assert result.suspects and result.suspects[0]["label"] == "cat" and result.suspects[0]["likely"] == "coffee"
    planted = {p.hash for p in made.find("Pets", runs).classes["cat"]}
    assert result.suspects[0]["file"].split("/")[1].split(".")[0] in planted
    again = check_jobs.find(cfg, data.fingerprint, runs)  # another session, a reload
    assert again is not None and again.result().suspects == result.suspects
    # A new version of the dataset is a new check.
    made.remove_photo("Pets", "cat", result.suspects[0]["file"].split("/")[1].split(".")[0], runs)
    fresh = datasets.load(cfg, runs)
    assert check_jobs.find(cfg, fresh.fingerprint, runs) is None


def test_stop_ends_the_check_as_cancelled(pets):
    runs, dataset = pets
    cfg = check_config("last", dataset=dataset.ref, image_size=96)
    data = datasets.load(cfg, runs)
    job = check_jobs.start(cfg, data.fingerprint, runs)
    job.stop()
    assert job.status()["status"] == "cancelled"
    assert wait(job, 60)["status"] == "cancelled"
    assert job.result() is None


def test_a_check_whose_process_died_reads_as_failed_with_a_sentence(tmp_path):
    job = check_jobs.CheckJob(tmp_path / "checks" / "k")
    job.path.mkdir(parents=True)
    atomic_write_json(job.path / "status.json", {"status": "running", "pid": 999_999_999, "started": time.time()})
    status = job.status()
    assert status["status"] == "failed" and status["reason"] == check_jobs.DIED
    (job.path / "status.json").write_text("{torn")
    assert job.status()["status"] == "failed" and "damaged" in job.status()["reason"]
    assert job.result() is None and job.events() == []
