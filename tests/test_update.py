"""Teaching a run what it got wrong (issue 32): ranking unlabeled photos for a finished run
(tl.suggest, `tl suggest`), and updating a run on its made dataset's newest version
(tl.update) with the comparison its metrics record."""

import json
import zipfile

import numpy as np
import pytest

from tl import cli, runs, training, update
from tl.data import made
from tl.errors import UserError
from tl.suggest import rank, values

from conftest import photo, photos, tiny_config, train_run


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    """A made dataset 'Pets' (6 cat and 6 coffee photos) and a finished feature-extraction run on it."""
    root = tmp_path_factory.mktemp("update")
    patch = pytest.MonkeyPatch()
    patch.setenv("TL_DATA_DIR", str(root / "data"))
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(6, "chelsea"))
    made.add_photos("Pets", "coffee", photos(6, "coffee"))
    run = train_run(root / "runs", tiny_config(dataset="data:Pets", strategy="feature_extraction", tags=["mine"],
                                                samples_per_class=0))
    assert run.status()["status"] == "done", run.status().get("reason")
    yield root, run
    patch.undo()


def one_sentence(text: str) -> str:
    text = text.strip()
    assert text and "\n" not in text and "Traceback" not in text and text.endswith("."), text
    return text


# -- ranking ------------------------------------------------------------------------------

def test_the_ranking_puts_unsure_photos_first_and_spreads_near_copies():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 8))
    features[1] = features[0] + 1e-3  # a near-copy of the most unsure photo
    confidence = np.array([0.5, 0.51, 0.55, 0.9, 0.99, 0.6])
    order = rank(values(confidence, 2), features)
    assert order[0] == 0 and list(order).index(1) > list(order).index(2)  # the copy waits behind other unsure ones
    assert sorted(order) == list(range(6))
    # Without the copy, the order is by confidence alone.
    assert list(rank(values(confidence[[0, 2, 3, 4, 5]], 2), features[[0, 2, 3, 4, 5]])) == [0, 1, 4, 2, 3]
    # An unknown photo gains the bonus.
    boosted = values(confidence, 2, unknown=[False, False, False, False, True, False])
    assert list(rank(boosted, features)).index(4) < list(rank(values(confidence, 2), features)).index(4)


def test_suggest_ranks_a_folder_and_a_zip_as_json(pets, tmp_path, capsys):
    root, run = pets
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(5):
        (pool / f"cat-{i}.jpg").write_bytes(photo(20 + i, "chelsea"))
        (pool / f"rocket-{i}.jpg").write_bytes(photo(i, "rocket"))
    (pool / "broken.jpg").write_bytes(b"not a photo")
    code = cli.main(["suggest", run.id, "--folder", str(pool), "--top", "4", "--json", "--runs-dir", str(root / "runs")])
    out, err = capsys.readouterr()
    assert code == 0, err
    found = json.loads(out.strip().splitlines()[-1])
    assert found["total"] == 11 and len(found["suggestions"]) == 4 and found["run_id"] == run.id
    assert [s["rank"] for s in found["suggestions"]] == [1, 2, 3, 4]
    assert [u["file"] for u in found["unreadable"]] == ["broken.jpg"] and "error: " in err
    first = found["suggestions"][0]
    assert set(first) >= {"file", "value", "guess", "confidence", "unknown", "novelty", "why"}
    assert first["guess"] in ("cat", "coffee")

    archive = tmp_path / "pool.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(pool.glob("*-*.jpg")):
            zf.write(path, f"pool/{path.name}")
    code = cli.main(["suggest", run.id, "--zip", str(archive), "--runs-dir", str(root / "runs")])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"The 10 photos of 10 that would teach run {run.id} most") and len(lines) == 11


def test_suggest_answers_bad_input_in_one_sentence(pets, tmp_path, capsys):
    root, run = pets
    runs_dir = str(root / "runs")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("notes.txt", "no photos here")
    queued = training.prepare(tiny_config(dataset="data:Pets", strategy="feature_extraction"), root / "runs")
    cases = {
        "does not exist": ["suggest", run.id, "--folder", str(tmp_path / "missing")],
        "holds no images": ["suggest", run.id, "--zip", str(empty)],
        "There is no run": ["suggest", "no-such-run", "--folder", str(tmp_path)],
        "is queued": ["suggest", queued.id, "--folder", str(tmp_path)],
        "gone.zip' does not exist": ["suggest", run.id, "--zip", str(tmp_path / "gone.zip")],
    }
    try:
        for expected, argv in cases.items():
            code = cli.main(argv + ["--runs-dir", runs_dir])
            out, err = capsys.readouterr()
            [line] = [line for line in err.splitlines() if line.startswith("error: ")]
            assert code == cli.EXIT_USAGE and expected in one_sentence(line), (expected, err)
    finally:
        runs.delete(queued.id, root / "runs")


# -- updating a run ------------------------------------------------------------------------

def test_an_update_trains_the_same_settings_on_the_new_version_and_compares(pets):
    root, run = pets
    with pytest.raises(UserError, match="has not changed since run"):
        update.plan(run, root / "runs")
    made.add_photos("Pets", "cat", photos(4, "chelsea", start=6))
    made.add_photos("Pets", "coffee", photos(2, "coffee", start=6))
    queued = []
    new = update.start(run, lambda cfg, data: queued.append((cfg, data)) or training.prepare(cfg, root / "runs", data=data),
                       root / "runs")
    # The time estimate knows the 12 earlier photos are cached: only the 6 new ones are extracted.
    (cfg, data), = queued
    assert training._cached_photos(cfg, data, root / "runs") == 12 and len(data) == 18
    assert training._cached_photos(cfg.replace(image_size=cfg.image_size + 8), data, root / "runs") == 0
    training.execute(new, root / "runs")
    assert new.status()["status"] == "done", new.status().get("reason")
    cfg = new.config
    assert cfg.tags == ("mine", f"updates:{run.id}") and update.updated_run_id(cfg) == run.id
    assert (cfg.strategy, cfg.backbone, cfg.seed, cfg.head) == (run.config.strategy, run.config.backbone,
                                                               run.config.seed, run.config.head)
    record = new.metrics["update"]
    assert record["updates"] == run.id and record["added"] == {"cat": 4, "coffee": 2} and record["removed"] == {}
    assert record["version_after"] > record["version_before"] == run.data_origin["version"]
    assert record["classes"] == ["cat", "coffee"]
    old_test = set(json.loads((run.path / "split.json").read_text())["content_hashes"]["test"])
    assert record["shared_test_photos"] == len(old_test) > 0  # the stable split kept every old test photo
    for side in ("before", "after"):
        assert 0.0 <= record[side]["test_accuracy"] <= 1.0 and 0.0 <= record[side]["unknown_rate"] <= 1.0
    assert new.metrics["features_reused"] == 12
    line = update.card_line(new.metrics)
    assert line.startswith(f"This model updates run {run.id}: dataset version") and "6 photo(s) added" in line
    assert update.card_line(run.metrics) is None
    from tl.export import model_card

    assert f"- {line}" in model_card(new) and "This model updates run" not in model_card(run)


def test_only_a_finished_run_on_a_made_dataset_can_be_updated(pets, tmp_path):
    root, run = pets
    other = train_run(tmp_path / "runs", tiny_config(strategy="feature_extraction"))
    with pytest.raises(UserError, match="did not train on a dataset made in the app"):
        update.plan(other, tmp_path / "runs")
    queued = training.prepare(tiny_config(dataset="data:Pets", strategy="feature_extraction"), tmp_path / "runs")
    with pytest.raises(UserError, match="is queued; only a finished run can be updated"):
        update.plan(queued, tmp_path / "runs")
