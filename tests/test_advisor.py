"""The advisor: the four cases, and similarity to ImageNet measured from the backbone's
ImageNet classifier (the statistic on generated probabilities whose answer is known)."""

import socket

import numpy as np
import pytest

from tl import datasets
from tl.advisor import (LARGE_PER_CLASS, SIMILARITY_THRESHOLD, Similarity, advise, images_per_class,
                        imagenet_confidence, measure_similarity, recommend, similarity_from_probs)
from tl.backbones import BACKBONES

from conftest import tiny_config

MEASURED_SIMILAR = Similarity(True, 0.8, 32, "measured")
MEASURED_DIFFERENT = Similarity(False, 0.1, 32, "measured")


def peaked(rng, n, classes=1000, top=0.9):
    """Rows with ``top`` on one random class and the rest spread evenly."""
    probs = np.full((n, classes), (1 - top) / (classes - 1))
    probs[np.arange(n), rng.integers(0, classes, n)] = top
    return probs


def test_confidence_is_one_for_certain_images_and_one_over_k_for_uniform_ones(rng):
    assert imagenet_confidence(np.eye(1000)[rng.integers(0, 1000, 20)]) == pytest.approx(1.0)
    assert imagenet_confidence(np.full((20, 1000), 1 / 1000)) == pytest.approx(1 / 1000)
    # Half the images 90% sure, half 30% sure: the mean top probability is 60%.
    mixed = np.vstack([peaked(rng, 10, top=0.9), peaked(rng, 10, top=0.3)])
    assert imagenet_confidence(mixed) == pytest.approx(0.6)


def test_confidence_rejects_what_is_not_probabilities():
    for bad in (np.ones(5) / 5, np.zeros((0, 10)), np.full((3, 4), 0.5), -np.eye(3)):
        with pytest.raises(ValueError, match="probs"):
            imagenet_confidence(bad)


def test_threshold_separates_confident_from_spread_predictions(rng):
    sure = similarity_from_probs(peaked(rng, 32, top=0.85))
    assert sure.similar is True and sure.score == pytest.approx(0.85) and sure.sample == 32
    assert "recognises these images" in sure.reason
    # Dirichlet rows with a small concentration are peaked; a large one spreads them out.
    assert similarity_from_probs(rng.dirichlet(np.full(1000, 0.001), 32)).similar is True
    assert similarity_from_probs(rng.dirichlet(np.full(1000, 10.0), 32)).similar is False
    at = similarity_from_probs(peaked(rng, 4, top=SIMILARITY_THRESHOLD))
    assert at.similar is True
    below = similarity_from_probs(peaked(rng, 4, top=SIMILARITY_THRESHOLD - 0.01))
    assert below.similar is False and "does not recognise" in below.reason


@pytest.mark.parametrize("per_class, similarity, case, strategy", [
    (50, MEASURED_SIMILAR, "small data, similar to ImageNet", "feature_extraction"),
    (50, MEASURED_DIFFERENT, "small data, different from ImageNet", "earlier_layer"),
    (LARGE_PER_CLASS, MEASURED_SIMILAR, "large data, similar to ImageNet", "fine_tune"),
    (5000, MEASURED_DIFFERENT, "large data, different from ImageNet", "full_fine_tune"),
])
def test_the_four_cases_from_a_measured_similarity(per_class, similarity, case, strategy):
    advice = advise(per_class, similarity)
    assert (advice.case, advice.strategy) == (case, strategy)
    assert advice.images_per_class == per_class
    assert "similarity measured" in advice.basis
    assert advice.to_dict()["similarity"]["score"] == similarity.score


def test_unknown_similarity_falls_back_to_the_users_answer():
    unknown = Similarity(None, None, 0, "Backbone 'small_cnn' has no ImageNet classifier.")
    assert advise(50, unknown).strategy == "feature_extraction"
    advice = advise(50, unknown, assume_similar=False)
    assert advice.strategy == "earlier_layer"
    assert "similarity assumed: Backbone 'small_cnn' has no ImageNet classifier." in advice.basis


@pytest.mark.parametrize("backbone", [name for name, spec in BACKBONES.items() if not spec.pretrained])
@pytest.mark.parametrize("per_class, similarity", [(50, MEASURED_SIMILAR), (5000, MEASURED_DIFFERENT)])
def test_without_pretrained_weights_the_advice_is_scratch(backbone, per_class, similarity):
    advice = advise(per_class, similarity, backbone=backbone)
    assert (advice.case, advice.strategy) == ("no pretrained weights", "scratch")
    assert advice.reason.startswith(f"Transfer is not possible: {backbone} has no pretrained weights")
    assert "ImageNet features already" not in advice.reason and "similarity to ImageNet does not decide" in advice.basis
    assert recommend(per_class, True, backbone=backbone).strategy == "scratch"


def test_random_or_missing_weights_advise_scratch_and_say_why():
    random = advise(50, MEASURED_SIMILAR, backbone="resnet50", weights="none")
    assert random.strategy == "scratch" and "the weights are random ('none')" in random.reason
    why = "The ImageNet weights for resnet50 are not in /x/models and cannot be downloaded now."
    missing = advise(50, MEASURED_SIMILAR, backbone="resnet50", unavailable=why)
    assert missing.strategy == "scratch" and why in missing.reason
    # A pretrained backbone with its weights: the four cases as before.
    assert advise(50, MEASURED_SIMILAR, backbone="efficientnet_lite0").strategy == "feature_extraction"
    assert recommend(50, True, backbone="resnet50", weights="imagenet").strategy == "feature_extraction"


def test_images_per_class_is_the_median_count():
    data = datasets.load(tiny_config(samples_per_class=9, synthetic_classes=3))
    assert images_per_class(data) == 9


@pytest.mark.parametrize("backbone", ["small_cnn", "perceptron"])
def test_backbones_without_an_imagenet_head_give_unknown(backbone):
    data = datasets.load(tiny_config())
    found = measure_similarity(data, backbone)
    assert found.similar is None and found.score is None
    assert found.reason == (f"Backbone '{backbone}' has no ImageNet classifier, so similarity to ImageNet "
                            "cannot be measured; pick a pretrained backbone to measure it.")


def test_measurement_offline_says_why_and_random_weights_look_unfamiliar(monkeypatch):
    data = datasets.load(tiny_config())
    # The real network path on random weights: the classifier spreads its probability
    # over the 1000 classes, so the images do not look like ImageNet.
    found = measure_similarity(data, "mobilenet_v2", sample=4, weights=None)
    assert found.similar is False and found.sample == 4 and found.score < 0.05

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    # The tests' KERAS_HOME holds no weights, and now no host name resolves either.
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    offline = measure_similarity(data, "mobilenet_v2", sample=4)
    assert offline.similar is None and offline.score is None
    assert "could not be downloaded (no internet?), so similarity to ImageNet was not measured." in offline.reason
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5" in offline.reason


def test_weights_warning_names_what_cannot_transfer():
    from tl.strategies import STRATEGIES, weights_warning

    assert "small_cnn has no pretrained weights" in weights_warning("feature_extraction", "small_cnn", "none")
    assert "weights are random ('none')" in weights_warning("fine_tune", "resnet50", "none")
    assert weights_warning("scratch", "small_cnn", "none") is None  # nothing to transfer is the point
    assert weights_warning("feature_extraction", "efficientnet_lite0", "imagenet") is None
    assert weights_warning("frozen", "resnet50", "run:20261201-x") is None  # an earlier run's backbone
    for name, spec in STRATEGIES.items():
        assert (weights_warning(name, "perceptron", "none") is None) == (not spec.pretrained)
