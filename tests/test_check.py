"""Checking a dataset (tl/findings.py, tl/check.py, `python -m tl check`): the pure parts on synthetic
probabilities and features, then the issue's "Done when" on real images: digit scans with 10%
of their labels flipped (3 seeds), planted near-duplicates and an outlier among crops of
scikit-image's photographs, and a class with flipped labels against clean ones.

The real-image checks extract EfficientNet-Lite0 features (its ImageNet weights come with
pip) at 64 and 96 pixels into one cache shared by the module, to keep the file's time
short on two cores."""

import io
import json

import numpy as np
import pytest

from tl import check, cli, findings
from tl.errors import Cancelled, DataError

from conftest import tiny_config, train_run, write_image_folder


IMAGE_SIZE = 64  # digit scans: 8x8, enlarged inside the model
PHOTO_SIZE = 96
PER_CLASS = 60
SEEDS = (0, 1, 2)


# -- the pure parts ----------------------------------------------------------------------

def test_folds_are_stratified_balanced_and_seeded():
    labels = np.repeat(np.arange(3), [7, 11, 23])
    fold = findings.fold_of(labels, 5, seed=4)
    assert np.array_equal(fold, findings.fold_of(labels, 5, seed=4))
    assert not np.array_equal(fold, findings.fold_of(labels, 5, seed=5))
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for label in range(3):  # each class spread over the folds as evenly as it can be
        per_fold = np.bincount(fold[labels == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


def test_label_issues_thresholds_suspects_ranking_and_quality():
    # Class 0's own items get 0.9, 0.8 and 0.1 for it (threshold 0.6); the last of them has
    # 0.9 for class 1, whose own items average 0.65: it is suspect, class 1 its likely class.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6], [0.5, 0.5]])
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    found = findings.label_issues(labels, probs)
    assert np.allclose(found.thresholds, [0.6, 0.65])
    assert found.suspect.tolist() == [False, False, True, False, False, False, False]
    assert found.likely[2] == 1
    assert found.ranking[0] == 2 and found.score[2] == pytest.approx(0.9)
    assert found.ranking.tolist() == [2, 6, 5, 3, 1, 4, 0]  # self-confidence, lowest first; ties in order
    assert found.quality.tolist() == pytest.approx([2 / 3, 1.0])
    # Item 6 sits at 0.5 for class 0, under class 0's threshold: low confidence, not suspect.
    assert not found.suspect[6]


def test_a_class_without_items_claims_none():
    probs = np.array([[0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [0.8, 0.1, 0.1]])
    found = findings.label_issues(np.array([0, 0, 0]), probs)
    assert np.isinf(found.thresholds[1:]).all() and not found.suspect.any()


def test_out_of_fold_probabilities_find_flipped_labels_and_are_deterministic():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    labels = np.repeat(np.arange(4), 40)
    features = (centres[labels] + rng.normal(size=(160, 16))).astype(np.float32)
    flipped = np.array([0, 1, 40, 41, 80, 81, 120, 121])  # two of each class carry the next class's label
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 4
    folds = []
    probs = findings.out_of_fold(features, noisy, 4, seed=3, on_fold=lambda *args: folds.append(args[:2]))
    assert folds == [(k, 5) for k in range(1, 6)]
    assert np.allclose(probs.sum(axis=1), 1) and np.array_equal(probs, findings.out_of_fold(features, noisy, 4, seed=3))
    found = findings.label_issues(noisy, probs)
    assert set(found.ranking[:8]) == set(flipped) and found.suspect[flipped].all()
    assert (found.likely[flipped] == labels[flipped]).all()


def test_out_of_fold_stops_when_asked():
    features = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with pytest.raises(Cancelled):
        findings.out_of_fold(features, np.arange(50) % 2, 2, should_stop=lambda: True)


def test_near_duplicates_tile_by_tile_match_all_pairs_and_stay_bounded():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(300, 12)).astype(np.float32)
    features[7] = features[250] + 0.01 * rng.normal(size=12)  # across tiles of 64
    features[30] = features[31] * 2  # same direction, another length
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = unit @ unit.T
    i, j = np.nonzero(np.triu(sims >= 0.6, 1))
    pairs, similarity = findings.near_duplicates(features, 0.6, block=64)
    assert {tuple(p) for p in pairs.tolist()} == set(zip(i.tolist(), j.tolist()))
    assert np.all(np.diff(similarity) <= 0) and np.allclose(similarity, sims[pairs[:, 0], pairs[:, 1]], atol=1e-5)
    top, _ = findings.near_duplicates(features, 0.99, block=64)
    assert {tuple(p) for p in top.tolist()} == {(7, 250), (30, 31)}
    few, few_sims = findings.near_duplicates(features, 0.0, block=64, max_pairs=5)
    assert len(few) == 5 and few_sims[0] == pytest.approx(1.0) and tuple(few[0]) == (30, 31)


def test_standardising_removes_what_every_item_shares():
    rng = np.random.default_rng(2)
    shared = 50 + rng.normal(size=(1, 8))  # a large common part: every pair looks alike
    features = (shared + rng.normal(size=(40, 8))).astype(np.float32)
    features[5] = features[9] + 0.01
    assert len(findings.near_duplicates(features, 0.95)[0]) > 100
    pairs, _ = findings.near_duplicates(features, 0.95, standardise=True)
    assert pairs.tolist() == [[5, 9]]


def test_outliers_are_far_from_every_class():
    rng = np.random.default_rng(3)
    centres = np.abs(rng.normal(size=(3, 32))) * 4
    labels = np.repeat(np.arange(3), 30)
    features = np.abs(centres[labels] + rng.normal(size=(90, 32))).astype(np.float32)
    features[10] = np.abs(rng.normal(size=32)) * 10 * (np.arange(32) % 7 == 0)  # nothing like any class
    distance, flags, cut = findings.outliers(features, labels, 3)
    assert np.flatnonzero(flags).tolist() == [10] and distance[10] > cut >= np.delete(distance, 10).max()


def test_the_map_is_the_first_two_principal_components():
    rng = np.random.default_rng(4)
    features = (rng.normal(size=(200, 6)) * [5, 3, 1, 0.5, 0.2, 0.1] + 10).astype(np.float32)
    coordinates, explained = findings.pca_map(features)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    _, values, axes = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ axes[:2].T
    for k in range(2):  # up to the sign of each axis
        assert np.allclose(np.abs(coordinates[:, k]), np.abs(expected[:, k]), atol=1e-4)
    assert np.allclose(explained, values[:2] ** 2 / (values ** 2).sum(), atol=1e-4)
    assert np.array_equal(coordinates, findings.pca_map(features)[0])


# -- real images -------------------------------------------------------------------------

def _png(array) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _digits(per_class: int = PER_CLASS):
    """``per_class`` of scikit-learn's 8x8 digit scans per class (a fixed choice), uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(5)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(digits.target == c))[:per_class]
                                   for c in range(10)]))
    return (digits.images[keep] / 16 * 255).round().astype(np.uint8), digits.target[keep]


def _write_digits(root, images, labels, given):
    """A folder of class sub-folders named by the given labels; file names keep the index."""
    files = []
    for i, (image, label) in enumerate(zip(images, given)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        files.append(f"{label}/{i:04d}.png")
        (root / files[-1]).write_bytes(_png(image))
    return files


def _cli_check(capsys, *flags):
    code = cli.main(["check", *flags])
    out = capsys.readouterr().out
    return code, out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One runs folder (so one feature and OpenVINO cache) for the module's real checks."""
    return tmp_path_factory.mktemp("check-runs")


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_flipped_labels_rank_first(seed, tmp_path, cache, capsys):
    """10% of the digit scans moved into another class's folder: precision at k (k = the
    number moved) at least 0.70, and the median rank of the moved ones in the first quarter."""
    images, labels = _digits()
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), len(labels) // 10, replace=False)
    given = labels.copy()
    given[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    files = _write_digits(tmp_path / "digits", images, labels, given)
    out = tmp_path / "check.json"
    code, stdout = _cli_check(capsys, "--dataset", "folder", "--data-dir", str(tmp_path / "digits"), "--cut",
                              "earlier", "--image-size", str(IMAGE_SIZE), "--seed", str(seed), "--runs-dir",
                              str(cache), "--json", "--out", str(out))
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    result = check.CheckResult.from_dict(json.loads(out.read_text()))
    rank = {image["file"]: image["rank"] for image in result.images}
    moved = {files[i] for i in flipped}
    k = len(moved)
    precision = len([f for f in moved if rank[f] <= k]) / k
    median_rank = float(np.median([rank[f] for f in moved]))
    print(f"seed {seed}: precision at {k} = {precision:.3f}, median rank {median_rank:.0f} of {len(files)}")
    assert precision >= 0.70
    assert median_rank <= len(files) / 4
    # The JSON line: suspects ranked, most suspicious first, each with the four fields.
    suspects = summary["suspects"]
    assert suspects and all(set(s) == {"file", "label", "likely", "score"} for s in suspects)
    assert [s["score"] for s in suspects] == sorted((s["score"] for s in suspects), reverse=True)
    assert [s["file"] for s in suspects] == [s["file"] for s in result.suspects]
    truth = {files[i]: str(labels[i]) for i in flipped}
    found = [s for s in suspects if s["file"] in truth]
    assert np.mean([s["likely"] == truth[s["file"]] for s in found]) >= 0.8  # and says where they belong
    assert set(summary) >= {"suspects", "duplicates", "outliers", "label_quality"}


@pytest.mark.slow
def test_a_class_with_flipped_labels_has_lower_label_quality(tmp_path, cache):
    images, labels = _digits()
    rng = np.random.default_rng(7)
    moved = rng.choice(np.flatnonzero(labels != 3), 12, replace=False)
    given = labels.copy()
    given[moved] = 3
    _write_digits(tmp_path / "digits", images, labels, given)
    cfg = check.check_config("earlier", dataset="folder", data_dir=str(tmp_path / "digits"), image_size=IMAGE_SIZE)
    result = check.run_check(cfg, cache)
    quality = result.label_quality
    print(quality)
    assert all(quality["3"] < value for name, value in quality.items() if name != "3")


def _photo_crops(side: int = 192, per_photo: int = 8):
    """Non-overlapping ``side``-pixel crops of scikit-image's photographs, a class per photo
    (not its star field: a nearly black image, whose resized copy loses the stars)."""
    import skimage.data

    rng = np.random.default_rng(0)
    names = ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "retina", "immunohistochemistry",
             "brick", "grass", "gravel", "cell", "moon")
    crops = {}
    for name in names:
        photo = np.asarray(getattr(skimage.data, name)())
        photo = photo[..., :3] if photo.ndim == 3 else photo
        h, w = photo.shape[:2]
        cells = [(y, x) for y in range(0, h - side + 1, side) for x in range(0, w - side + 1, side)]
        if len(cells) >= findings.FOLDS:
            crops[name] = [photo[y:y + side, x:x + side] for y, x in
                           (cells[c] for c in rng.permutation(len(cells))[:per_photo])]
    return crops


@pytest.mark.slow
def test_planted_near_duplicates_and_an_outlier_are_found(tmp_path, cache, capsys):
    from PIL import Image
    from sklearn.datasets import load_digits

    from tl import datasets

    root = tmp_path / "photos"
    files = []
    for name, crops in _photo_crops().items():
        (root / name).mkdir(parents=True)
        for i, crop in enumerate(crops):
            files.append(f"{name}/{i}.png")
            (root / files[-1]).write_bytes(_png(crop))
    copies = {}
    for original in np.random.default_rng(1).choice(files, 3, replace=False):
        image = Image.open(root / original).convert("RGB")  # resized to 3/4 and saved as a JPEG
        copy = original.replace(".png", "_copy.jpg")
        image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.BILINEAR).save(root / copy, quality=85)
        copies[copy] = original
    scan = (load_digits().images[0] / 16 * 255).round().astype(np.uint8)  # a digit scan: another kind of image
    (root / "coffee" / "scan.png").write_bytes(_png(scan))

    out = tmp_path / "check.json"
    code, stdout = _cli_check(capsys, "--dataset", "folder", "--data-dir", str(root), "--image-size",
                              str(PHOTO_SIZE), "--runs-dir", str(cache), "--json", "--out", str(out))
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    pairs = {frozenset(pair[:2]) for pair in summary["duplicates"]}
    planted = {frozenset(item) for item in copies.items()}
    print("duplicates:", summary["duplicates"], "outliers:", summary["outliers"])
    assert planted <= pairs
    assert len(pairs - planted) <= 2
    assert "coffee/scan.png" in summary["outliers"]

    # Each pair says whether it crosses the split training makes for the same seed and fractions.
    result = check.CheckResult.from_dict(json.loads(out.read_text()))
    data = datasets.load(check.check_config(dataset="folder", data_dir=str(root), image_size=PHOTO_SIZE))
    split = {data.keys[i]: name for name, rows in data.splits.items() for i in rows}
    assert {image["file"]: image["split"] for image in result.images} == split
    for pair in result.duplicates:
        a, b = pair["files"]
        assert pair["leakage"] == (split[a] != split[b]) and pair["same_class"] == (a.split("/")[0] == b.split("/")[0])
    flagged = {image["file"] for image in result.images if image["duplicate"]}
    assert flagged == {f for pair in result.duplicates for f in pair["files"]}


# -- the entry point, the cache and the CLI ----------------------------------------------

def test_a_check_and_training_share_the_feature_cache_and_events_come_in_order(tmp_path):
    root = write_image_folder(tmp_path / "shapes", {"a": 8, "b": 8, "c": 8}, size=16)
    runs_dir = tmp_path / "runs"
    settings = dict(dataset="folder", data_dir=str(root), backbone="small_cnn", weights="none", image_size=16)
    events = []
    first = check.run_check(check.check_config(**settings), runs_dir, on_event=events.append)
    kinds = [e["type"] for e in events if e["type"] != "log"]
    assert kinds[0] == "data" and kinds[-1] == "done"
    assert [e["cache"] for e in events if e["type"] == "features"][-1] == "stored"
    assert [(e["fold"], e["folds"]) for e in events if e["type"] == "fold"] == [(k, 5) for k in range(1, 6)]
    assert [e["stage"] for e in events if e["type"] == "stage"] == ["duplicates", "outliers", "map"]
    assert first.settings["feature_cache"] == "miss" and len(first.images) == 24
    assert all(check.describe_event(e) for e in events if e["type"] != "done")

    run = train_run(runs_dir, tiny_config(**settings, strategy="feature_extraction", samples_per_class=0))
    assert run.metrics["feature_cache"] == "hit"
    again = check.run_check(check.check_config(**settings), runs_dir)
    assert again.settings["feature_cache"] == "hit"
    record = json.loads(json.dumps(again.to_dict()))
    assert check.CheckResult.from_dict(record) == again and record["format"] == check.RESULT_FORMAT
    same = {key: value for key, value in again.to_dict().items() if key not in ("created", "timings", "settings")}
    assert same == {key: value for key, value in first.to_dict().items() if key not in ("created", "timings", "settings")}


def test_a_stopped_check_caches_nothing(tmp_path):
    root = write_image_folder(tmp_path / "shapes", {"a": 6, "b": 6}, size=16)
    cfg = check.check_config(dataset="folder", data_dir=str(root), backbone="small_cnn", weights="none", image_size=16)
    with pytest.raises(Cancelled):
        check.run_check(cfg, tmp_path / "runs", should_stop=lambda: True)
    assert not list((tmp_path / "runs" / ".cache" / "features").glob("*/features.npy"))


def test_a_made_dataset_is_checked_by_its_stored_names(tmp_path, capsys):
    from tl.data import made

    images, labels = _digits(per_class=6)
    runs_dir = tmp_path / "runs"
    made.create_dataset("Scans", runs_dir)
    for label in (0, 1, 7):
        made.add_photos("Scans", str(label), [(f"{i}.png", _png(image)) for i, image in
                                               enumerate(images[labels == label])], runs_dir)
    code, stdout = _cli_check(capsys, "--dataset", "data:Scans", "--backbone", "small_cnn", "--weights", "none",
                              "--image-size", "16", "--runs-dir", str(runs_dir), "--out", str(tmp_path / "c.json"))
    assert code == 0 and "Label quality" in stdout and "Checked 18 images in 3 classes of data:Scans" in stdout
    result = json.loads((tmp_path / "c.json").read_text())
    dataset = made.find("Scans", runs_dir)
    stored = {f"{name}/{photo.file}" for name, photos in dataset.classes.items() for photo in photos}
    assert {image["file"] for image in result["images"]} == stored
    assert result["origin"]["name"] == "Scans" and result["origin"]["version"] == dataset.version


@pytest.mark.parametrize("setup, flags, message", [
    ("none", ["--dataset", "nope"], "Expected `dataset` to be one of"),
    ("flat", ["--dataset", "folder"], "class"),
    ("few", ["--dataset", "folder"], "Class 'b' has only 2 image(s); each class needs at least 3"),
    ("none", ["--dataset", "folder", "--backbone", "perceptron", "--cut", "earlier"],
     "Backbone 'perceptron' has no earlier layer to cut at"),
    ("few", ["--dataset", "folder", "--out", "/nonexistent/folder/c.json"], "The folder of '/nonexistent/folder/"),
])
def test_mistakes_get_one_sentence(setup, flags, message, tmp_path, capsys):
    root = tmp_path / "data"
    if setup == "flat":
        root.mkdir()
        (root / "a.png").write_bytes(_png(np.zeros((8, 8), np.uint8)))
    elif setup == "few":
        write_image_folder(root, {"a": 6, "b": 2}, size=16)
    code = cli.main(["check", *flags, "--data-dir", str(root), "--runs-dir", str(tmp_path / "runs"), "--json",
                     "--weights", "none"])
    captured = capsys.readouterr()
    assert code == 2
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("error: ") and message in error and len(captured.err.strip().splitlines()) == 1
    assert json.loads(captured.out.strip().splitlines()[-1])["error"] == error[len("error: "):]


def test_the_check_result_rejects_nothing_it_wrote_and_reads_unknown_keys_quietly():
    result = check.CheckResult(dataset="d", class_names=["a"], settings={}, images=[], suspects=[], duplicates=[],
                               outliers=[], label_quality={"a": 1.0}, accuracy=1.0, thresholds={}, map={},
                               timings={"total": 0.0})
    record = dict(result.to_dict(), later_field=1)
    assert check.CheckResult.from_dict(record) == result


def test_too_few_images_per_class_names_the_number_needed():
    from tl.data.core import Data

    def data(*counts):
        return Data(name="x", class_names=list("abc"[:len(counts)]), labels=np.repeat(np.arange(len(counts)), counts),
                    keys=[], fingerprint="", image_size=8, reader=None)

    with pytest.raises(DataError, match=r"^Class 'b' has only 2 image\(s\); the check needs at least 3 in each class"):
        check._check_counts(data(5, 2))
    with pytest.raises(DataError, match="^The check needs at least two classes"):
        check._check_counts(data(6))
    # From 3 images a class is checked, with as many folds as the smallest class has images.
    assert [check._check_counts(data(8, n)) for n in (3, 4, 5, 9)] == [3, 4, 5, 5]
    assert check.fewer_folds_note(3, 3) == ("With 3 images in the smallest class, the label checks use 3 folds "
                                           "instead of 5 and say less than with 5 or more images per class.")
    assert check.fewer_folds_note(7, 5) == ""


def test_a_folder_of_three_images_per_class_is_checked_and_says_it_tells_less(tmp_path, capsys):
    root = write_image_folder(tmp_path / "three", {"a": 3, "b": 3, "c": 5}, size=16)
    flags = ["--dataset", "folder", "--data-dir", str(root), "--backbone", "small_cnn", "--weights", "none",
             "--image-size", "16", "--runs-dir", str(tmp_path / "runs")]
    code, stdout = _cli_check(capsys, *flags, "--out", str(tmp_path / "c.json"), "--events", str(tmp_path / "e.jsonl"))
    note = ("With 3 images in the smallest class, the label checks use 3 folds instead of 5 and say less than with "
            "5 or more images per class.")
    assert code == 0 and "Checked 11 images in 3 classes" in stdout and note in stdout
    assert "each judged by a head fitted on the other 2 of 3 parts" in stdout
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["note"] == note and result["settings"]["folds"] == 3 and len(result["images"]) == 11
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [(e["fold"], e["folds"]) for e in events if e["type"] == "fold"] == [(1, 3), (2, 3), (3, 3)]
    code, stdout = _cli_check(capsys, *flags, "--json")
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["note"] == note


def test_few_folds_still_judge_every_item_by_a_head_that_knew_every_class():
    labels = np.repeat(np.arange(3), [3, 4, 9])
    folds = findings.folds_for(labels)
    assert folds == 3 and findings.folds_for(np.repeat(np.arange(2), [6, 40])) == 5
    fold = findings.fold_of(labels, folds)
    for k in range(folds):  # every class held out and trained on in every fold
        assert set(labels[fold == k]) == set(labels[fold != k]) == {0, 1, 2}
    rng = np.random.default_rng(0)
    features = (rng.normal(size=(3, 8))[labels] * 3 + rng.normal(size=(len(labels), 8))).astype(np.float32)
    seen = []
    found = findings.analyse(features, labels, 3, on_event=lambda e: seen.append(e))
    assert [(e["fold"], e["folds"]) for e in seen if e["type"] == "fold"] == [(1, 3), (2, 3), (3, 3)]
    assert np.allclose(found.probs.sum(axis=1), 1) and found.probs.argmax(axis=1).tolist() == labels.tolist()


def test_the_map_of_fewer_images_than_features_is_the_covariance_map():
    """Fewer images than feature dimensions (a run's test split) take the SVD of the data,
    not the eigenvectors of the dim x dim covariance: the same picture, far cheaper."""
    from tl.findings import pca_map

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(30, 64)) * np.linspace(4, 0.1, 64)).astype(np.float32)
    many = np.concatenate([x] * 3)  # 90 rows > 64: the covariance path, same directions
    small, small_explained = pca_map(x)
    large, large_explained = pca_map(many)
    np.testing.assert_allclose(small, large[:30], atol=1e-4)
    np.testing.assert_allclose(small_explained, large_explained, atol=1e-6)
