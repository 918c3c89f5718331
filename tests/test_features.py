"""The feature cache row by row: a made dataset's new version extracts only its new photos,
the rows of the photos it shares with the version before are read back unchanged, a damaged
part costs only its own photos, and built-in datasets keep one key per version."""

import numpy as np
import pytest

from tl import datasets, features
from tl.data import made
from tl.paths import cache_root

from conftest import photos, tiny_config, train_run


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("TL_DATA_DIR", str(path))
    return path


def extractor():
    import keras

    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(keepdims=True)(inputs))


def pass_over(data, root, events=None):
    """One :func:`features.features_of` pass with a mean-colour extractor on TensorFlow."""
    record = events if events is not None else []
    return features.features_of(data, extractor, root=root, backbone="mean", weights="none", cut=None,
                                image_size=16, batch_size=4, engine="tensorflow", precision="fp32",
                                emit=lambda kind, **fields: record.append(dict(fields, type=kind)))


def made_data(name="Pets"):
    return datasets.load(tiny_config(dataset=f"data:{name}"))


def test_a_new_version_extracts_only_its_new_photos(data_dir, tmp_path):
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(4, "chelsea"))
    made.add_photos("Pets", "coffee", photos(4, "coffee"))
    first_data = made_data()
    first = pass_over(first_data, tmp_path / "cache")
    assert (first.cache, first.reused, first.computed) == ("miss", 0, 8)

    made.add_photos("Pets", "cat", photos(2, "chelsea", start=4))
    second_data, events = made_data(), []
    second = pass_over(second_data, tmp_path / "cache", events)
    assert (second.cache, second.reused, second.computed) == ("miss", 8, 2)
    assert second.key != first.key and len(second.store) == 10
    stored = next(e for e in events if e.get("cache") == "stored")
    assert (stored["images"], stored["reused"]) == (2, 8)
    # The shared photos' rows are the very rows the first version read.
    old = {key: i for i, key in enumerate(first_data.keys)}
    shared = [i for i, key in enumerate(second_data.keys) if key in old]
    assert len(shared) == 8
    np.testing.assert_array_equal(second.store.read(shared), first.store.read([old[second_data.keys[i]] for i in shared]))
    # Each version's rows read back by its key, as a run's features event names it.
    assert features.lookup(tmp_path / "cache", first.key).shape == (8, 3)
    assert features.lookup(tmp_path / "cache", second.key).shape == (10, 3)
    # A third pass over the same version is a hit: nothing goes through the backbone.
    third = pass_over(second_data, tmp_path / "cache")
    assert (third.cache, third.reused, third.computed) == ("hit", 10, 0)


def test_a_damaged_part_costs_only_its_own_photos(data_dir, tmp_path):
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(3, "chelsea"))
    made.add_photos("Pets", "coffee", photos(3, "coffee"))
    pass_over(made_data(), tmp_path / "cache")
    made.add_photos("Pets", "coffee", photos(2, "coffee", start=3))
    pass_over(made_data(), tmp_path / "cache")
    [setting] = (tmp_path / "cache" / "features").iterdir()
    newest = sorted(setting.glob("part-*.npy"))[-1]
    raw = bytearray(newest.read_bytes())
    raw[-4:] = bytes(b ^ 0xFF for b in raw[-4:])
    newest.write_bytes(bytes(raw))
    events = []
    again = pass_over(made_data(), tmp_path / "cache", events)
    assert (again.reused, again.computed) == (6, 2)
    assert any("were damaged (its checksum does not match); extracting them again" in e.get("message", "")
               for e in events)


def test_a_photo_in_two_folders_is_extracted_once(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "photos" / name / f"{i}.png")
    (tmp_path / "photos" / "b" / "copy.png").write_bytes((tmp_path / "photos" / "a" / "0.png").read_bytes())
    data = datasets.load(tiny_config(dataset="folder", data_dir=str(tmp_path / "photos")), tmp_path / "runs")
    found = pass_over(data, tmp_path / "cache")
    assert (len(found.store), found.computed) == (7, 6)
    copy = data.keys.index("b/copy.png")
    np.testing.assert_array_equal(found.store.read([copy]), found.store.read([data.keys.index("a/0.png")]))


def test_built_in_data_keeps_one_key_per_version(tmp_path):
    data = datasets.load(tiny_config())
    assert data.content_hashes is None
    assert features.item_keys(data) == [f"{data.fingerprint}:{i}" for i in range(len(data))]


def test_updating_a_run_records_the_reuse(data_dir, tmp_path):
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(4, "chelsea"))
    made.add_photos("Pets", "coffee", photos(4, "coffee"))
    cfg = tiny_config(dataset="data:Pets", strategy="feature_extraction")
    first = train_run(tmp_path / "runs", cfg)
    assert first.metrics["feature_cache"] == "miss" and first.metrics["features_reused"] == 0
    made.add_photos("Pets", "coffee", photos(1, "coffee", start=4))
    second = train_run(tmp_path / "runs", cfg)
    assert second.status()["status"] == "done", second.status().get("reason")
    assert (second.metrics["feature_cache"], second.metrics["features_reused"]) == ("miss", 8)
    stored = [e for e in second.events()[0] if e["type"] == "features" and e["cache"] == "stored"]
    assert stored[0]["images"] == 1
    assert len(list((cache_root(tmp_path / "runs") / "features").iterdir())) == 1


def test_entries_of_the_old_layout_are_freed_at_the_next_extraction(data_dir, tmp_path):
    old = tmp_path / "cache" / "features" / "0123456789abcdef0123"
    old.mkdir(parents=True)
    np.save(old / "features.npy", np.zeros((3, 2), dtype=np.float32))
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(3, "chelsea"))
    made.add_photos("Pets", "coffee", photos(3, "coffee"))
    found = pass_over(made_data(), tmp_path / "cache")
    assert found.computed == 6 and not old.exists()
