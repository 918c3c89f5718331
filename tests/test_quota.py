"""The data root's one cap (tl.data.quota): uploads and made datasets together, the oldest
unreferenced ones removed first, what runs use never removed, one sentence when full."""

import json
import os
import time
import zipfile

import pytest

from tl import cli, ingest, runs
from tl.data import made, quota
from tl.errors import DataError, UserError
from tl.paths import data_root

from conftest import photos, tiny_config, write_image_folder

MB = 2 ** 20


def upload(tmp_path, root, name: str, per_class: int = 3, size: int = 64):
    """Store an uploaded folder of two classes (distinct bytes per ``name``); return it."""
    src = write_image_folder(tmp_path / f"src-{name}", {f"{name}-a": per_class, f"{name}-b": per_class}, size=size)
    files = [(str(p.relative_to(src)), p.read_bytes()) for p in sorted(src.rglob("*.png"))]
    return ingest.ingest_files(files, root=root)


def age(path, days: float) -> None:
    when = time.time() - days * 86400
    os.utime(path, (when, when))


def test_the_oldest_unreferenced_upload_goes_first_and_a_runs_upload_stays(tmp_path, monkeypatch):
    root, runs_dir = tmp_path / "data", tmp_path / "runs"
    runs_dir.mkdir()
    monkeypatch.setenv("TL_RUNS_DIR", str(runs_dir))
    old, used, new = (upload(tmp_path, root, name) for name in ("old", "used", "new"))
    age(old.path.parent, 3)
    age(used.path.parent, 5)  # the oldest, but a run was trained on it
    runs.create(tiny_config(dataset="folder", data_dir=str(used.path)), runs_dir)
    held = quota.entries(root, runs_dir)
    assert {e["path"].name: e["in_use"] for e in held} == {
        old.path.parent.name: False, used.path.parent.name: True, new.path.parent.name: False}
    total = sum(e["bytes"] for e in held)
    monkeypatch.setenv(quota.DISK_ENV, str((total + 1000) / MB))  # room for 1,000 bytes more, not for 1 MB
    assert quota.make_room(root, 1000, runs_dir) == []
    old_bytes = next(e["bytes"] for e in held if e["path"] == old.path.parent)
    removed = quota.make_room(root, old_bytes + 500, runs_dir)  # fits once the oldest unused one has gone
    assert removed == [old.path.parent] and not old.path.parent.exists()
    assert used.path.exists() and new.path.exists()
    with pytest.raises(DataError) as caught:
        quota.make_room(root, 10 * total, runs_dir, what="The zip 'class.zip'")
    text = str(caught.value)
    assert text.startswith("The zip 'class.zip' (") and "does not fit: the app's storage holds" in text
    assert quota.DISK_ENV in text and text.endswith("then try again.")
    assert used.path.exists()  # refused: what a run uses is kept


def test_an_upload_used_again_counts_as_new(tmp_path, monkeypatch):
    root = tmp_path / "data"
    first = upload(tmp_path, root, "first")
    second = upload(tmp_path, root, "second")
    age(first.path.parent, 2)
    age(second.path.parent, 1)
    again = upload(tmp_path, root, "first")  # the same folder again: reused, touched
    assert again.reused and again.path == first.path
    held = {e["path"].name: e for e in quota.entries(root, tmp_path / "no-runs")}
    total = sum(e["bytes"] for e in held.values())
    monkeypatch.setenv(quota.DISK_ENV, str(total / MB))
    removed = quota.make_room(root, 1, tmp_path / "no-runs")
    assert removed == [second.path.parent] and first.path.exists()


def test_ingest_makes_room_under_the_cap_and_refuses_when_it_cannot(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    first = upload(tmp_path, root, "one", per_class=4, size=96)
    size = quota.size_of(first.path.parent)
    monkeypatch.setenv(quota.DISK_ENV, str(1.5 * size / MB))  # one such upload fits, not two
    second = upload(tmp_path, root, "two", per_class=4, size=96)
    assert second.path.exists() and not first.path.exists()  # the older one made room
    monkeypatch.setenv(quota.DISK_ENV, str(0.5 * size / MB))
    with pytest.raises(DataError, match="does not fit: the app's storage holds"):
        upload(tmp_path, root, "three", per_class=4, size=96)
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())


def test_made_datasets_count_and_go_only_when_idle_unreferenced_and_the_cap_is_set(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    monkeypatch.setenv("TL_DATA_DIR", str(tmp_path / "data"))
    idle = made.create_dataset("idle", runs_dir)
    made.add_photos(idle, "cat", photos(3), runs_dir)
    kept = made.create_dataset("kept", runs_dir)
    made.add_photos(kept, "cat", photos(3, start=3), runs_dir)
    alive, gone = runs_dir / "20261202-000000-run", runs_dir / "20261201-000000-deleted"
    alive.mkdir()
    (kept.path / "refs" / f"{alive.name}.json").write_text(json.dumps({"run": str(alive), "version": 2, "hashes": []}))
    # A run that was deleted does not hold a dataset: one rule (live refs) for the cap and the clean-up.
    (idle.path / "refs" / f"{gone.name}.json").write_text(json.dumps({"run": str(gone), "version": 2, "hashes": []}))
    assert quota.live_refs(kept.path) == {alive.name: set()} and quota.live_refs(idle.path) == {}
    assert not (idle.path / "refs" / f"{gone.name}.json").exists()
    (idle.path / "refs" / f"{gone.name}.json").write_text(json.dumps({"run": str(gone), "version": 2, "hashes": []}))
    for dataset in (idle, kept):
        age(dataset.path, quota.IDLE_DAYS + 1)
    root = tmp_path / "data"
    total = sum(e["bytes"] for e in quota.entries(root, runs_dir))
    assert total > 0
    monkeypatch.delenv(quota.DISK_ENV, raising=False)  # the default cap: made datasets never removed
    monkeypatch.setattr(quota, "DEFAULT_MB", total / MB)
    with pytest.raises(DataError):
        quota.make_room(root, MB, runs_dir)
    assert idle.path.exists()
    monkeypatch.setenv(quota.DISK_ENV, str(total / MB))  # set on purpose: the idle, unused one goes
    assert quota.make_room(root, 1000, runs_dir) == [idle.path]
    assert kept.path.exists()
    with pytest.raises(DataError, match="This photo"):  # the photos themselves ask for room
        monkeypatch.setenv(quota.DISK_ENV, str(quota.size_of(kept.path) / MB))
        made.add_photos(kept, "cat", photos(1, picture="coffee"), runs_dir)


def test_a_cap_that_is_not_a_number_is_one_sentence(monkeypatch):
    monkeypatch.setenv(quota.DISK_ENV, "lots")
    with pytest.raises(DataError, match="TL_DISK_BUDGET_MB must be a number of megabytes"):
        quota.cap_mb()
    monkeypatch.setenv(quota.DISK_ENV, "0")
    assert quota.cap_mb() == (float("inf"), True)


def test_cli_data_commands_keep_what_the_runs_of_their_runs_dir_use(tmp_path, monkeypatch, capsys):
    """`tl data add/import --runs-dir X` over the cap: the uploads runs in X trained on are in
    use, even with no TL_RUNS_DIR and no ./runs (the cap once looked in the default folder)."""
    monkeypatch.chdir(tmp_path)  # no ./runs here
    runs_dir = tmp_path / "X"
    root = data_root(runs_dir)
    used = upload(tmp_path, root, "used")
    runs.create(tiny_config(dataset="folder", data_dir=str(used.path)), runs_dir)
    total = sum(e["bytes"] for e in quota.entries(root, runs_dir))
    monkeypatch.setenv(quota.DISK_ENV, str((total + 1000) / MB))  # full: only the unused could make room
    picture = tmp_path / "cat.jpg"
    picture.write_bytes(photos(1)[0][1])
    assert cli.main(["data", "add", "Pets", "cat", str(picture), "--runs-dir", str(runs_dir)]) != 0
    assert "does not fit" in capsys.readouterr().err
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name, data in photos(2) + photos(2, picture="coffee"):
            out.writestr(f"{'coffee' if 'coffee' in name else 'cat'}/{name}", data)
    assert cli.main(["data", "import", "Zipped", str(archive), "--runs-dir", str(runs_dir)]) != 0
    assert "does not fit" in capsys.readouterr().err
    assert used.path.exists() and runs.list_runs(runs_dir)


def test_pools_count_under_the_cap_and_go_oldest_first_unless_being_ranked(tmp_path, monkeypatch):
    from tl import background, pool_jobs

    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("TL_RUNS_DIR", str(runs_dir))
    run = runs.create(tiny_config(), runs_dir)
    run.set_status("done")
    root = data_root(runs_dir)
    upload(tmp_path, root, "kept")
    pools = {}
    for name, days in (("idle", 4), ("ranking", 9), ("new", 0)):
        job, total = pool_jobs.prepare(run, name, [(f"{name}{i}.jpg", data) for i, (_, data) in enumerate(photos(3))],
                                       runs_dir)
        assert total == 3 and job.path.parent == root / "pools"
        background.write_status(job.path, "done")
        age(job.path, days)
        pools[name] = job
    # Being ranked now: a live process holds it (this test's own), so the cap leaves it alone.
    background.write_status(pools["ranking"].path, "running", pid=os.getpid(), started=time.time() - 1)
    held = {e["path"].name: e for e in quota.entries(root, runs_dir)}
    assert sorted(e["kind"] for e in held.values()) == ["pool", "pool", "pool", "upload"]
    assert held[pools["ranking"].path.name]["in_use"] and not held[pools["idle"].path.name]["in_use"]
    total = sum(e["bytes"] for e in held.values())
    monkeypatch.setenv(quota.DISK_ENV, str(total / MB))
    one = held[pools["idle"].path.name]["bytes"]
    # The idle pool (4 days unused) goes before the newer upload; the one being ranked stays
    # though it is the oldest.
    assert quota.make_room(root, one // 2, runs_dir) == [pools["idle"].path]
    assert pools["ranking"].path.exists() and pools["new"].path.exists()
    monkeypatch.setattr(pool_jobs, "LIMIT", 2)
    with pytest.raises(UserError, match="rank at most 2 at a time"):
        pool_jobs.prepare(run, "big", [(f"b{i}.jpg", data) for i, (_, data) in enumerate(photos(3))], runs_dir)
    assert not (root / "pools" / f"{run.id}-big").exists()
