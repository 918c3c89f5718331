import numpy as np
import pytest

from tl import datasets
from tl.errors import DataError

from conftest import tiny_config, write_image_folder


def test_synthetic_is_deterministic_by_seed_and_index():
    a = datasets.synthetic_image(3, 17, 2)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    np.testing.assert_array_equal(a, datasets.synthetic_image(3, 17, 2))
    assert not np.array_equal(a, datasets.synthetic_image(4, 17, 2))


def test_synthetic_classes_differ_in_shape_not_just_colour():
    # Same seed and index: same colours and position, only the shape mask changes.
    images = [datasets.synthetic_image(0, 5, label) for label in range(len(datasets.SYNTHETIC_SHAPES))]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i].astype(int) - images[j].astype(int)).mean() > 1


def test_load_synthetic_caps_and_splits():
    data = datasets.load(tiny_config(samples_per_class=20, synthetic_classes=3))
    assert len(data) == 60 and data.class_names == ["disk", "square", "triangle"]
    assert data.counts() == {"disk": 20, "square": 20, "triangle": 20}
    assert data.read(0).shape == (32, 32, 3)


def test_split_is_stratified_disjoint_complete_and_seeded():
    labels = np.repeat(np.arange(3), [10, 40, 7])
    split = datasets.stratified_split(labels, ["a", "b", "c"], 0.2, 0.2, seed=1)
    everything = np.concatenate(list(split.values()))
    assert sorted(everything) == list(range(len(labels)))
    for part in split.values():
        assert set(labels[part]) == {0, 1, 2}  # every class in every split
    assert np.bincount(labels[split["test"]]).tolist() == [2, 8, 1]
    again = datasets.stratified_split(labels, ["a", "b", "c"], 0.2, 0.2, seed=1)
    other = datasets.stratified_split(labels, ["a", "b", "c"], 0.2, 0.2, seed=2)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split["test"], other["test"])


def test_a_class_with_two_images_cannot_be_split():
    with pytest.raises(DataError, match="Class 'b' has only 2 image"):
        datasets.stratified_split(np.array([0, 0, 0, 1, 1]), ["a", "b"], 0.2, 0.2, seed=0)


def test_folder_dataset_reads_classes_and_skips_junk(tmp_path):
    root = write_image_folder(tmp_path / "data", {"cats": 4, "dogs": 5})
    (root / "cats" / ".DS_Store").write_bytes(b"junk")
    (root / "dogs" / "notes.txt").write_text("hello")
    (root / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "__MACOSX").mkdir()
    data = datasets.load(tiny_config(dataset="folder", data_dir=str(root), samples_per_class=0))
    assert data.class_names == ["cats", "dogs"]
    assert data.counts() == {"cats": 4, "dogs": 5}
    assert sorted(reason for _, reason in data.skipped) == ["junk file", "not a readable image", "not an image file"]
    assert data.read(0).shape == (20, 20, 3) and data.image_size is None


@pytest.mark.parametrize("layout, message", [
    (None, "does not exist"),
    ({}, "has no class sub-folders"),
    ({"only": 3}, "has only one class ('only')"),
    ({"a": 3, "empty": 0}, "Class folder 'empty' has no images"),
])
def test_bad_folders_are_refused_with_the_valid_layout(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout is not None:
        root.mkdir()
        write_image_folder(root, layout)
    with pytest.raises(DataError) as info:
        datasets.load(tiny_config(dataset="folder", data_dir=str(root)))
    assert message in str(info.value)


def test_folder_fingerprint_changes_when_a_file_changes(tmp_path):
    root = write_image_folder(tmp_path / "data", {"a": 3, "b": 3})
    cfg = tiny_config(dataset="folder", data_dir=str(root))
    before = datasets.load(cfg).fingerprint
    assert datasets.load(cfg).fingerprint == before
    write_image_folder(root, {"a": 4})
    assert datasets.load(cfg).fingerprint != before


def test_balanced_class_weights():
    weights = datasets.balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    np.testing.assert_allclose(weights, [4 / 6, 2.0])


def test_image_pipeline_streams_uint8_batches_with_weights():
    data = datasets.load(tiny_config(samples_per_class=10))
    idx = data.splits["train"]
    ds = datasets.image_pipeline(data, idx, 4, image_size=16, class_weights=[1.0, 3.0])
    x, y, w = next(iter(ds))
    assert x.dtype.name == "uint8" and tuple(x.shape) == (4, 32, 32, 3)
    np.testing.assert_array_equal(w.numpy(), np.where(y.numpy() == 1, 3.0, 1.0))
    total = sum(len(b[0]) for b in ds)
    assert total == len(idx)


def test_folder_pipeline_resizes_each_image_to_batch_them(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "data", {"a": 3, "b": 3})
    Image.new("RGB", (50, 30), "red").save(root / "a" / "wide.png")
    data = datasets.load(tiny_config(dataset="folder", data_dir=str(root), image_size=24))
    ds = datasets.image_pipeline(data, np.arange(len(data)), 8, image_size=24)
    x, _ = next(iter(ds))
    # float32, not rounded: the values the saved model's own resize gives for the same file
    assert tuple(x.shape) == (7, 24, 24, 3) and x.dtype.name == "float32"
    import keras

    from PIL import Image as PILImage

    wide = np.asarray(PILImage.open(root / "a" / "wide.png").convert("RGB"))[None].astype("float32")
    resized = keras.layers.Resizing(24, 24, interpolation="bilinear", antialias=True)(wide)
    row = [i for i, key in enumerate(data.keys) if key.endswith("wide.png")][0]
    np.testing.assert_allclose(x.numpy()[row], np.asarray(resized)[0], atol=1e-4)


def test_augmenter_keeps_shape():
    augment = datasets.make_augmenter(0)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert tuple(augment(x, training=True).shape) == (2, 32, 32, 3)


def test_a_made_datasets_split_stays_put_as_photos_are_added(tmp_path, monkeypatch):
    from tl.data import made
    from conftest import photos

    monkeypatch.setenv("TL_DATA_DIR", str(tmp_path / "data"))
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(3, "chelsea"))
    made.add_photos("Pets", "coffee", photos(5, "coffee"))
    cfg = tiny_config(dataset="data:Pets", samples_per_class=0)  # every photo, no cap

    def assignment():
        data = datasets.load(cfg)
        return {data.keys[i]: name for name, rows in data.splits.items() for i in rows}

    before = assignment()
    for name in ("cat", "coffee"):  # three or more photos: at least one in each split
        assert {s for key, s in before.items() if key.startswith(name)} == {"train", "val", "test"}
    made.add_photos("Pets", "cat", photos(12, "chelsea", start=3))
    made.add_photos("Pets", "coffee", photos(12, "coffee", start=5))
    made.add_photos("Pets", "rocket", photos(3, "rocket"))
    after = assignment()
    assert {key: after[key] for key in before} == before
    assert len(after) == made.find("Pets").photos > len(before) and {"train", "val", "test"} <= set(after.values())
    # The same photos in the same order place the same way whatever else is stored; another seed moves them.
    other = datasets.load(tiny_config(dataset="data:Pets", samples_per_class=0, seed=1))
    assert {other.keys[i]: name for name, rows in other.splits.items() for i in rows} != after


def test_photos_placed_by_hash_follow_the_fractions():
    hashes = [f"{i:016x}" for i in range(4000)]
    chosen = datasets.stratified_split(np.zeros(4000, dtype=int), ["a"], 0.15, 0.2, seed=0, hashes=hashes)
    shares = {name: len(rows) / 4000 for name, rows in chosen.items()}
    assert abs(shares["test"] - 0.2) < 0.02 and abs(shares["val"] - 0.15) < 0.02
    again = datasets.stratified_split(np.zeros(4000, dtype=int), ["a"], 0.15, 0.2, seed=0, hashes=hashes)
    assert all(np.array_equal(chosen[k], again[k]) for k in chosen)
