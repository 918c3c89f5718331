"""tl.batch and `tl predict --folder / --zip`: many photos through one batched engine pass, rows
that agree with Predictor.predict one photo at a time, unreadable photos listed, Stop between
batches, the CSV and the sorted zip read back, and bad inputs refused in one sentence."""

import csv
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl import batch, cli
from tl.errors import DataError, UserError
from tl.images import decode_image
from tl.predict import DRAFT_SIZE, HeadResult, Prediction, Predictor

from conftest import LITE0_RUN, photo, tiny_config
from test_hostile_ingest import good_entries, make_zip, overlap_bomb, png


def encoded(image: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, fmt)
    return out.getvalue()


def mixed_photos() -> list:
    """Real photo crops (JPEG and PNG, several sizes), noise, a flat grey and a 3x3 image."""
    items = [(f"cat-{i}.jpg", photo(i)) for i in range(6)]
    items += [(f"astronaut-{i}.png", photo(i, "astronaut", "PNG")) for i in range(3)]
    big = np.asarray(Image.open(io.BytesIO(photo(1, "coffee"))).resize((900, 700)))
    items += [("big.jpg", encoded(big, "JPEG")), ("small.jpg", encoded(big[:60, :90], "JPEG"))]
    noise = np.random.default_rng(5).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    items += [("noise.png", encoded(noise, "PNG")), ("grey.png", encoded(np.full((40, 50, 3), 128, np.uint8), "PNG")),
              ("tiny.png", encoded(noise[:3, :3], "PNG"))]
    return items


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory, trained_once):
    return trained_once(tiny_config(**LITE0_RUN), tmp_path_factory.mktemp("batch"))


@pytest.fixture(scope="module")
def predictor(lite0_run):
    return Predictor(lite0_run)


@pytest.mark.slow
def test_rows_agree_with_predict_one_photo_at_a_time_through_one_shared_pass_per_batch(predictor):
    items = mixed_photos()
    calls = []
    runner = predictor.transfer_path.runner
    predictor.transfer_path.runner = lambda images: calls.append(len(images)) or runner(images)
    try:
        rows = batch.classify(predictor, items, k=2, imagenet=True, batch_size=4).rows
    finally:
        predictor.transfer_path.runner = runner
    assert predictor.shared and calls == [4, 4, 4, 2]  # both heads read the one pass of each batch
    assert [row.file for row in rows] == [name for name, _ in items]
    for (name, data), row in zip(items, rows):
        one = predictor.predict(decode_image(data, name=name, draft_size=DRAFT_SIZE), k=2)
        mine = row.prediction
        assert row.error is None and mine.transfer.labels == one.transfer.labels
        np.testing.assert_allclose(mine.transfer.probs, one.transfer.probs, atol=1e-4)
        np.testing.assert_allclose(mine.imagenet.probs, one.imagenet.probs, atol=1e-4)
        assert mine.imagenet.labels == one.imagenet.labels
        assert row.unknown == one.unknown is not None and row.novelty == pytest.approx(one.novelty, abs=1e-4)
        assert row.label == one.transfer.labels[0] and row.confidence == pytest.approx(one.confidence, abs=1e-4)
    by_name = {row.file: row for row in rows}
    assert by_name["noise.png"].unknown is True


@pytest.mark.slow
def test_an_unreadable_photo_is_listed_with_its_reason_and_the_rest_are_classified(predictor, tmp_path):
    good = photo(0)
    (tmp_path / "on-disk.jpg").write_bytes(photo(2))
    items = [("a.jpg", good), ("empty.jpg", b""), ("notes.png", b"just text"), ("cut.jpg", good[:len(good) // 3]),
             ("on-disk.jpg", tmp_path / "on-disk.jpg"), ("gone.jpg", tmp_path / "gone.jpg")]
    progress = []
    result = batch.classify(predictor, items, batch_size=4, on_progress=lambda *done: progress.append(done))
    errors = {row.file: row.error for row in result.unreadable}
    assert set(errors) == {"empty.jpg", "notes.png", "cut.jpg", "gone.jpg"}
    assert errors["empty.jpg"] == "empty.jpg is empty (0 bytes)."
    assert "notes.png is not an image that can be read" in errors["notes.png"]
    assert "cut.jpg is truncated or corrupt" in errors["cut.jpg"] and "gone.jpg cannot be read" in errors["gone.jpg"]
    assert all("\n" not in error for error in errors.values())
    assert [row.label is not None for row in result.rows] == [True, False, False, False, True, False]
    assert progress == [(0, 6), (4, 6), (6, 6)] and not result.stopped


@pytest.mark.slow
def test_stop_is_checked_between_batches(predictor):
    items = [(f"{i}.jpg", photo(i)) for i in range(10)]
    asked = []
    result = batch.classify(predictor, items, batch_size=3, should_stop=lambda: asked.append(1) or len(asked) == 2)
    assert result.stopped and len(result.rows) == 6 and result.total == 10
    assert all(row.prediction is not None for row in result.rows)


def made_row(name, label, probs, unknown=None, novelty=None) -> batch.Row:
    labels = ["cats", "dogs", "=cmd"]
    order = list(np.argsort(-np.asarray(probs), kind="stable"))
    head = HeadResult([labels[i] for i in order], [probs[i] for i in order], np.asarray(probs), 0.0)
    prediction = Prediction(head, None, "none", True, 0.0, novelty=novelty, unknown=unknown)
    assert head.labels[0] == label
    return batch.Row(name, prediction)


def test_the_csv_and_the_sorted_zip_hold_what_they_should(tmp_path):
    rows = [made_row("a/one.jpg", "cats", [0.7, 0.2, 0.1], False, 0.1),
            made_row("b/one.jpg", "cats", [0.6, 0.3, 0.1], False, 0.2),
            made_row("odd.png", "dogs", [0.1, 0.5, 0.4], True, 0.9),
            made_row("-x.jpg", "=cmd", [0.1, 0.2, 0.7]),
            batch.Row("bad.jpg", error="bad.jpg is empty (0 bytes).")]
    out = batch.write_csv(rows, tmp_path / "answers.csv")
    table = list(csv.DictReader(out.open()))
    assert list(table[0]) == ["file", "class", "confidence", "unknown", "novelty",
                              "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3", "error"]
    assert [r["file"] for r in table] == ["a/one.jpg", "b/one.jpg", "odd.png", "'-x.jpg", "bad.jpg"]
    assert table[0] == {"file": "a/one.jpg", "class": "cats", "confidence": "0.700000", "unknown": "false",
                             "novelty": "0.100000", "class_1": "cats", "prob_1": "0.700000", "class_2": "dogs",
                             "prob_2": "0.200000", "class_3": "'=cmd", "prob_3": "0.100000", "error": ""}
    assert table[2]["unknown"] == "true" and table[3]["unknown"] == "" and table[3]["class"] == "'=cmd"
    assert table[4]["error"] == "bad.jpg is empty (0 bytes)." and table[4]["class"] == table[4]["prob_1"] == ""

    sources = {row.file: f"bytes of {row.file}".encode() for row in rows}
    sources["odd.png"] = tmp_path / "odd.png"
    (tmp_path / "odd.png").write_bytes(b"odd on disk")
    counts = batch.sorted_zip(rows, sources.__getitem__, tmp_path / "sorted.zip")
    with zipfile.ZipFile(tmp_path / "sorted.zip") as archive:
        assert sorted(archive.namelist()) == ["=cmd/-x.jpg", "_unknown/odd.png", "cats/one (2).jpg", "cats/one.jpg"]
        assert archive.read("cats/one.jpg") == b"bytes of a/one.jpg"
        assert archive.read("cats/one (2).jpg") == b"bytes of b/one.jpg"
        assert archive.read("_unknown/odd.png") == b"odd on disk"
    assert counts == {"cats": 2, "_unknown": 1, "=cmd": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.csv", "odd.png", "sorted.zip"]


def test_a_failing_sorted_zip_leaves_no_file_behind(tmp_path):
    rows = [made_row("a.jpg", "cats", [0.9, 0.05, 0.05])]
    with pytest.raises(FileNotFoundError):
        batch.sorted_zip(rows, lambda name: tmp_path / "missing.jpg", tmp_path / "sorted.zip")
    assert list(tmp_path.iterdir()) == []


def test_folder_photos_recurse_skip_junk_and_refuse_a_missing_or_empty_folder(tmp_path):
    for name in ("b.jpg", "sub/a.PNG", "sub/deeper/c.webp", ".hidden.jpg", "__MACOSX/x.jpg", "notes.txt",
                 ".git/d.jpg", "Thumbs.db"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = batch.folder_photos(tmp_path)
    assert [name for name, _ in found] == ["b.jpg", "sub/a.PNG", "sub/deeper/c.webp"]
    assert found[1][1] == tmp_path / "sub" / "a.PNG"
    with pytest.raises(UserError, match="does not exist"):
        batch.folder_photos(tmp_path / "nope")
    with pytest.raises(UserError, match="is not a folder"):
        batch.folder_photos(tmp_path / "b.jpg")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="holds no images"):
        batch.folder_photos(tmp_path / "text")


@pytest.fixture
def contained(tmp_path, monkeypatch):
    """The system temp folder inside tmp_path, so whatever is left there shows."""
    (tmp_path / "systmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systmp"))
    monkeypatch.setenv("TL_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def files_under(root) -> set:
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")}


def test_a_zip_of_any_layout_is_unpacked_into_a_temporary_folder_removed_afterwards(contained):
    blob = make_zip([("photos/2024/a.png", png(0)), ("b.png", png(1)), ("__MACOSX/._b.png", b"x"),
                     ("readme.txt", b"hi"), ("photos/empty/", b"")])
    with batch.zip_photos(blob) as found:
        assert [name for name, _ in found] == ["b.png", "photos/2024/a.png"]
        assert found[0][1].read_bytes() == png(1)
        assert str(found[0][1]).startswith(str(contained / "systmp"))
    assert files_under(contained) == {"systmp"}


HOSTILE = [
    ("zip_slip", lambda: make_zip(good_entries() + [("../../evil.png", png(0))]), "leaves its folder ('../../evil.png')"),
    ("absolute", lambda: make_zip(good_entries() + [("/tmp/evil.png", png(0))]), "absolute path ('/tmp/evil.png')"),
    ("ratio_bomb", lambda: make_zip(good_entries() + [("a/zeros.png", bytes(8 * 1024**2))]), "looks like a zip bomb"),
    ("overlap_bomb", overlap_bomb, "looks like a zip bomb ('dogs/0000.png' and 'cats/0001.png' share the same bytes"),
    ("no_images", lambda: make_zip([("notes.txt", b"hi"), (".DS_Store", b"x")]), "holds no images"),
    ("not_a_zip", lambda: b"plain text", "is not a zip file; upload a .zip of photos."),
]


@pytest.mark.parametrize("make, match", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_zips_are_refused_in_ingests_sentence_and_leave_nothing(contained, make, match):
    with pytest.raises(DataError) as info:
        with batch.zip_photos(make()):
            pass
    assert match in str(info.value) and info.value.__cause__ is None and "\n" not in str(info.value)
    assert files_under(contained) == {"systmp"}
    assert not Path("/tmp/evil.png").exists()


# -- the command line ------------------------------------------------------------------

@pytest.mark.slow
def test_cli_folder_writes_the_csv_and_the_sorted_zip(lite0_run, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    items = mixed_photos()[:5] + [("sub/noise.png", encoded(np.random.default_rng(5).integers(
        0, 256, (120, 90, 3), dtype=np.uint8), "PNG")), ("broken.jpg", b"not a photo")]
    for name, data in items:
        (folder / name).write_bytes(data)
    code = cli.main(["predict", lite0_run.id, "--folder", str(folder), "--csv", str(tmp_path / "out.csv"),
                     "--sorted-zip", str(tmp_path / "sorted.zip"), "--top", "2",
                     "--runs-dir", str(lite0_run.path.parent)])
    captured = capsys.readouterr()
    assert code == 0 and captured.out == ""
    assert "error: broken.jpg is not an image that can be read" in captured.err
    assert "classified 7 of 7 photos (100%)" in captured.err and "Classified 6 of 7 photos (1 unreadable)" in captured.err
    table = {row["file"]: row for row in csv.DictReader((tmp_path / "out.csv").open())}
    assert sorted(table) == sorted(name for name, _ in items)
    assert table["broken.jpg"]["error"] and table["sub/noise.png"]["unknown"] == "true"
    with zipfile.ZipFile(tmp_path / "sorted.zip") as archive:
        names = archive.namelist()
        assert "_unknown/noise.png" in names and len(names) == 6
        for name in names:
            folder_name, _, filename = name.partition("/")
            row = next(r for file, r in table.items() if Path(file).name == filename)
            assert folder_name == ("_unknown" if row["unknown"] == "true" else row["class"])
            assert archive.read(name) == (folder / row["file"]).read_bytes()


@pytest.mark.slow
def test_cli_zip_prints_the_csv_or_one_json_object_per_photo(lite0_run, tmp_path, capsys):
    blob = make_zip([("in/a.jpg", photo(0)), ("in/b.jpg", photo(1)), ("in/bad.png", b"xx")])
    (tmp_path / "p.zip").write_bytes(blob)
    args = ["predict", lite0_run.id, "--zip", str(tmp_path / "p.zip"), "--runs-dir", str(lite0_run.path.parent)]
    assert cli.main(args) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["file"] for row in table] == ["in/a.jpg", "in/b.jpg", "in/bad.png"]
    assert table[0]["class"] and not table[0]["error"] and table[2]["error"]
    assert cli.main(args + ["--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == ["in/a.jpg", "in/b.jpg", "in/bad.png"]
    assert lines[0]["imagenet"] and lines[0]["transfer"] and "error" in lines[2]


@pytest.mark.parametrize("case", ["missing_folder", "zip_slip", "overlap_bomb", "no_images", "images_and_folder",
                                  "no_input", "out_folder_missing"])
def test_cli_bad_input_is_one_sentence_exit_2_and_nothing_written(contained, capsys, case):
    zip_path, out = contained / "in.zip", contained / "out.csv"
    args = list({"missing_folder": ["--folder", str(contained / "nope")],
            "images_and_folder": ["x.jpg", "--folder", str(contained)],
            "no_input": [],
            "out_folder_missing": ["--folder", str(contained), "--csv", str(contained / "no" / "out.csv")]
            }.get(case, ["--zip", str(zip_path)]))
    if case == "zip_slip":
        zip_path.write_bytes(make_zip([("../evil.png", png(0)), ("a.png", png(1))]))
    elif case == "overlap_bomb":
        zip_path.write_bytes(overlap_bomb())
    elif case == "no_images":
        zip_path.write_bytes(make_zip([("readme.txt", b"hi")]))
    if "--csv" not in args:
        args += ["--csv", str(out)]
    before = files_under(contained)
    assert cli.main(["predict", "any-run", *args, "--runs-dir", str(contained / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    assert files_under(contained) == before and not (contained.parent / "evil.png").exists()


def test_cli_refuses_a_run_still_training_and_writes_nothing(contained, capsys):
    from tl import training

    run = training.prepare(tiny_config(), contained / "runs")
    run.set_status("running", pid=os.getpid())
    (contained / "photos").mkdir()
    (contained / "photos" / "a.png").write_bytes(png(0))
    code = cli.main(["predict", run.id, "--folder", str(contained / "photos"), "--csv", str(contained / "out.csv"),
                     "--runs-dir", str(contained / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and f"Run {run.id} is running and has no model to classify with" in err
    assert not (contained / "out.csv").exists() and files_under(contained / "systmp") == set()
