"""``python -m tl data`` end to end (issue 20's "Done when"): two classes of real photos
added from files, a run trained on ``data:NAME``, a photo removed afterwards, and the earlier
run still predicting and exporting while ``runs --json`` names the version it trained on;
then list, show, export, import and delete. One run is trained for the whole module."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from conftest import REPO


CROPS = 8


def tl(env: dict, *args, stdin=subprocess.DEVNULL):
    return subprocess.run([sys.executable, "-m", "tl", *map(str, args)], cwd=env["CWD"], capture_output=True,
                          text=True, timeout=300, check=False, stdin=stdin,
                          env={**os.environ, "TL_RUNS_DIR": env["TL_RUNS_DIR"], "TL_DATA_DIR": env["TL_DATA_DIR"],
                               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})


def ok(result) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def write_crops(folder: Path, picture: str, start: int = 0, count: int = CROPS) -> list:
    """JPEG files of crops of a real photograph, each different."""
    image = getattr(skimage.data, picture)()
    h, w = image.shape[:2]
    paths = []
    for i in range(start, start + count):
        path = folder / f"{picture}-{i}.jpg"
        y, x = i * 9, i * 13
        Image.fromarray(image[y:y + h * 2 // 3, x:x + w * 2 // 3]).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """Photos added as 'cat' and 'coffee' to data:Kitchen, and one run trained on it."""
    root = tmp_path_factory.mktemp("cli_data")
    (root / "cwd").mkdir()
    env = {"CWD": str(root / "cwd"), "TL_RUNS_DIR": str(root / "runs"), "TL_DATA_DIR": str(root / "data")}
    photos = root / "photos"
    photos.mkdir()
    cats, coffee = write_crops(photos, "chelsea"), write_crops(photos, "coffee")

    added = tl(env, "data", "add", "Kitchen", "cat", *cats)
    assert ok(added).strip() == ("Added 8 photo(s) to 'cat' of data:Kitchen: 8 photo(s) in that class; "
                                 "1 classes, 8 photos (version 2).")
    assert added.stderr.strip() == "Made dataset data:Kitchen."
    assert "version 3" in ok(tl(env, "data", "add", "data:kitchen", "coffee", *coffee))

    trained = tl(env, "train", "--dataset", "data:Kitchen", "--image-size", "96", "--samples-per-class", "8",
                 "--json")
    summary = json.loads(ok(trained).strip().splitlines()[-1])
    assert summary["status"] == "done", summary
    return {"env": env, "root": root, "cats": cats, "coffee": coffee, "run_id": summary["run_id"],
            "run_dir": Path(summary["run_dir"]), "version": 3}


def show(flow, *flags) -> dict:
    return json.loads(ok(tl(flow["env"], "data", "show", "Kitchen", "--json", *flags)))


@pytest.mark.slow
def test_the_run_records_the_dataset_and_the_version_it_trained_on(flow):
    split = json.loads((flow["run_dir"] / "split.json").read_text())
    assert split["origin"]["kind"] == "made" and split["origin"]["name"] == "Kitchen"
    assert split["origin"]["version"] == flow["version"]
    keys = split["train"] + split["val"] + split["test"]
    assert len(keys) == 16 and {k.split("/")[0] for k in keys} == {"cat", "coffee"}
    hashes = [h for s in ("train", "val", "test") for h in split["content_hashes"][s]]
    assert hashes == [Path(k).stem for k in keys]
    labels = json.loads((flow["run_dir"] / "labels.json").read_text())
    assert labels["class_names"] == ["cat", "coffee"] and labels["origin"] == split["origin"]
    assert show(flow)["runs"] == [flow["run_id"]]


@pytest.mark.slow
def test_after_a_photo_is_removed_the_earlier_run_still_predicts_exports_and_names_its_version(flow, tmp_path):
    env = flow["env"]
    removed = flow["cats"][0]
    before = show(flow, "--photos")
    out = ok(tl(env, "data", "remove", "Kitchen", "cat", removed))
    assert out.strip() == (f"Removed one photo from 'cat' (7 left); run(s) {flow['run_id']} trained on it, so it "
                           "stays stored until they are deleted.")
    after = show(flow, "--photos")
    assert after["version"] == before["version"] + 1 > flow["version"]
    assert after["classes"] == {"cat": 7, "coffee": 8}
    gone = set(before["photos_by_class"]["cat"]) - set(after["photos_by_class"]["cat"])
    assert len(gone) == 1 and (Path(after["path"]) / "photos" / gone.pop()).is_file()  # kept for the run

    rows = json.loads(ok(tl(env, "runs", "--json")))
    [row] = [r for r in rows if r["run_id"] == flow["run_id"]]
    assert row["dataset"] == "data:Kitchen" and row["data_version"] == flow["version"] and row["status"] == "done"

    cat, cup = write_crops(tmp_path, "chelsea", start=20, count=1) + write_crops(tmp_path, "coffee", start=20, count=1)
    predicted = ok(tl(env, "predict", flow["run_id"], cat, cup, "--json", "--top", "2"))
    answers = [json.loads(line) for line in predicted.strip().splitlines()]
    assert [a["transfer"][0]["label"] for a in answers] == ["cat", "coffee"], answers

    labels = tmp_path / "labels.txt"
    ok(tl(env, "export", flow["run_id"], "--format", "labels", "--out", labels))
    assert labels.read_text().split() == ["cat", "coffee"]
    card = tmp_path / "card.md"
    ok(tl(env, "export", flow["run_id"], "--format", "card", "--out", card))
    assert "data:Kitchen" in card.read_text()


def test_list_json_and_show_photos(flow):
    listed = json.loads(ok(tl(flow["env"], "data", "list", "--json")))
    [kitchen] = [d for d in listed if d["name"] == "Kitchen"]
    shown = show(flow, "--photos")
    assert kitchen["ref"] == "data:Kitchen" and kitchen["version"] == shown["version"]
    assert kitchen["classes"] == shown["classes"] and kitchen["photos"] == sum(shown["classes"].values())
    for name, files in shown["photos_by_class"].items():
        assert len(files) == shown["classes"][name]
        assert all(len(Path(f).stem) == 16 and f.endswith(".jpg") for f in files)
        assert all((Path(shown["path"]) / "photos" / f).is_file() for f in files)
    text = ok(tl(flow["env"], "data", "show", "Kitchen", "--photos"))
    assert text.startswith(f"data:Kitchen  version {shown['version']}")
    assert all(f in text for files in shown["photos_by_class"].values() for f in files)
    assert f"Runs trained on it: {flow['run_id']}" in text
    table = ok(tl(flow["env"], "data", "list"))
    assert "data:Kitchen" in table and f"(version {shown['version']})" in table


def test_export_gives_a_zip_of_class_folders_that_imports_as_a_copy(flow, tmp_path):
    env = flow["env"]
    out = tmp_path / "kitchen.zip"
    assert ok(tl(env, "data", "export", "Kitchen", "--out", out)).strip() == f"Wrote {out}."
    shown = show(flow, "--photos")
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
        names = sorted(archive.namelist())
        assert names == sorted(f"Kitchen/{c}/{f}" for c, files in shown["photos_by_class"].items() for f in files)
        first = archive.read(names[0])
    Image.open(io.BytesIO(first)).verify()

    imported = tl(env, "data", "import", "Kitchen copy", out)
    assert ok(imported).strip().startswith("Made data:Kitchen copy: 2 classes")
    copy = json.loads(ok(tl(env, "data", "show", "kitchen copy", "--json", "--photos")))
    assert copy["classes"] == shown["classes"] and copy["version"] > 1 and copy["runs"] == []
    assert {c: sorted(f) for c, f in copy["photos_by_class"].items()} == \
           {c: sorted(f) for c, f in shown["photos_by_class"].items()}

    again = tl(env, "data", "import", "KITCHEN COPY", out)
    assert again.returncode == 2 and again.stderr.strip().startswith("error: A made dataset called")
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr


@pytest.mark.slow
def test_delete_needs_yes_off_a_terminal_then_deletes(flow, tmp_path):
    env = flow["env"]
    out = tmp_path / "k.zip"
    ok(tl(env, "data", "export", "Kitchen", "--out", out))
    ok(tl(env, "data", "import", "Doomed", out))
    before = json.loads(ok(tl(env, "data", "list", "--json")))

    refused = tl(env, "data", "delete", "Kitchen")
    assert refused.returncode == 2 and refused.stdout == "" and "Traceback" not in refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("Deleting data:Kitchen (") and "needs --yes." in line and line.endswith(".")
    assert f"Runs {flow['run_id']} trained on it" in line
    assert tl(env, "data", "delete", "Doomed").returncode == 2
    assert json.loads(ok(tl(env, "data", "list", "--json"))) == before

    doomed = next(d for d in before if d["name"] == "Doomed")
    assert ok(tl(env, "data", "delete", "doomed", "--yes")).strip() == "Deleted data:Doomed."
    after = json.loads(ok(tl(env, "data", "list", "--json")))
    assert [d["name"] for d in after] == [d["name"] for d in before if d["name"] != "Doomed"]
    assert not Path(doomed["path"]).exists()
    assert not [p for p in Path(doomed["path"]).parent.iterdir() if p.name.endswith(".deleting")]
    unknown = tl(env, "data", "delete", "Doomed", "--yes")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: There is no made dataset 'Doomed'")
    assert show(flow)["runs"] == [flow["run_id"]]  # the run's dataset is untouched
    assert not list(Path(env["CWD"]).iterdir())
