import urllib.error

import numpy as np
import pytest

from tl.backbones import (BACKBONES, build_backbone, finetunable_layers, preprocess_layer,
                          weights_download_error)
from tl.errors import ConfigError, DownloadError

# Small inputs keep the builds fast; inception_v3 needs at least 75 pixels.
SIZES = {name: max(spec.min_size, 32) for name, spec in BACKBONES.items()}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_with_random_weights(name):
    backbone = build_backbone(name, SIZES[name], weights=None)
    assert backbone.name == "backbone"
    assert backbone.input.shape[1:] == (SIZES[name], SIZES[name], 3)
    assert len(backbone.output.shape) == 4  # a feature map (h, w, channels)
    assert backbone.output.shape[-1] > 0


@pytest.mark.parametrize("name", sorted(n for n, s in BACKBONES.items() if s.earlier_cut))
def test_earlier_cut_exists_and_is_earlier(name):
    size = SIZES[name] * 2
    full = build_backbone(name, size)
    cut = build_backbone(name, size, cut=BACKBONES[name].earlier_cut)
    assert len(cut.layers) < len(full.layers)
    assert cut.output.shape[1] >= full.output.shape[1]


def test_unknown_cut_is_a_config_error():
    with pytest.raises(ConfigError, match="has no layer named 'nope'"):
        build_backbone("small_cnn", 16, cut="nope")


@pytest.mark.parametrize("name", sorted(n for n, s in BACKBONES.items() if s.pretrained and not s.is_lite))
def test_preprocess_layer_matches_keras_preprocess_input(name):
    import importlib

    spec = BACKBONES[name]
    module = importlib.import_module(f"keras.applications.{spec.imagenet_module}")
    images = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    expected = module.preprocess_input(images.copy())
    ours = preprocess_layer(spec.preprocess)(images)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5, atol=1e-4)


def test_lite_preprocessing_is_minus_127_over_128():
    images = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    ours = preprocess_layer(BACKBONES["efficientnet_lite0"].preprocess)(images)
    np.testing.assert_allclose(np.asarray(ours), (images - 127.0) / 128.0, rtol=1e-5, atol=1e-5)


def test_finetunable_layers_hold_weights_and_skip_batchnorm():
    backbone = build_backbone("resnet50", 32)
    layers = finetunable_layers(backbone)
    assert layers and all(layer.weights for layer in layers)
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in layers)
    assert layers[-1].name == "conv5_block3_3_conv"


def test_imagenet_weights_offline_fail_with_the_file_and_the_folder(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    with pytest.raises(DownloadError) as info:
        build_backbone("mobilenet_v2", 32, weights="imagenet")
    message = str(info.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in message
    assert "models" in message and "weights 'none'" in message


def test_download_error_without_a_url_still_reads_well():
    message = str(weights_download_error("vgg16", "something else"))
    assert message.startswith("Could not download the ImageNet weights for vgg16")


def test_a_weights_file_that_does_not_fit_is_a_config_error(tmp_path):
    other = build_backbone("small_cnn", 16)
    path = tmp_path / "small.weights.h5"
    other.save_weights(path)
    with pytest.raises(ConfigError, match="Could not load weights file"):
        build_backbone("mobilenet_v2", 32, weights=str(path))
