"""Grad-CAM: where a head looks when it picks a class, as a heat map over the image.

For a head reading a feature map with spatial extent, the map's channels are weighted by
the mean gradient of the class probability over each channel, summed and rectified
(Selvaraju et al., 2017). When the map is a single cell (the ``perceptron`` baseline, or a
deep backbone fed a tiny input) there is nothing spatial to weigh, so the heat map is the
gradient's magnitude at each input pixel instead (a saliency map); ``method`` says which.
Either way the map is resized to the original image's size.
"""

from dataclasses import dataclass

import numpy as np

# Colour ramp for heat maps: low = dark blue, high = red.
_RAMP = np.array([(48, 18, 59), (60, 120, 230), (40, 200, 130), (250, 210, 40), (200, 25, 15)], dtype=np.float32)


@dataclass
class HeatMap:
    """A heat map in [0, 1] of the image's height and width."""

    values: np.ndarray
    class_index: int
    method: str  # "grad-cam" or "saliency"


def grad_cam(features, head, image: np.ndarray, index: int | None = None,
             class_index: int | None = None, feature_map=None) -> HeatMap:
    """Explain ``head``'s choice of ``class_index`` (default: its top class) on ``image``.

    Only the head is differentiated: the gradient of the class probability is taken with
    respect to the feature map the head reads, never through the backbone (that is all
    Grad-CAM needs, and a few milliseconds instead of a backward pass through the whole
    network). The backbone's forward pass is ``feature_map`` when given (the trunk's output(s)
    for this image, e.g. from the engine's pass), else run here. Only a single-cell map falls
    back to the input gradient (a saliency map), which does backpropagate through the trunk.

    Args:
        features: a model ``image -> resize -> preprocess -> trunk`` (a plain chain, as
            :mod:`tl.predict` builds it).
        head: a model from the trunk's output (``index`` picks one of several) to
            probabilities.
        image: ``(H, W, 3)`` RGB, 0-255.
        feature_map: the trunk's output(s) for ``image`` (a batch of one), if already computed.
    """
    import tensorflow as tf

    image = np.asarray(image)
    if feature_map is None:
        feature_map = _trunk_output(features, image)
    fmap = feature_map[index] if index is not None else feature_map
    fmap = tf.convert_to_tensor(np.asarray(fmap, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(fmap)
        probs = head(fmap, training=False)
        if class_index is None:
            class_index = int(tf.argmax(probs[0]))
        score = probs[0, class_index]
    grad_map = tape.gradient(score, fmap).numpy()[0]
    values = fmap.numpy()[0]
    cam = None
    if values.ndim == 3 and values.shape[0] * values.shape[1] > 1:
        weights = grad_map.mean(axis=(0, 1))
        cam = np.maximum((values * weights).sum(axis=-1), 0.0)
        if not np.isfinite(cam).all() or cam.max() <= 0:
            cam = None
    method = "grad-cam"
    if cam is None:
        method, cam = "saliency", _saliency(features, head, image, index, class_index)
    return HeatMap(_normalise(resize_map(_normalise(cam), image.shape[0], image.shape[1])), int(class_index), method)


def _trunk_output(features, image: np.ndarray):
    """The trunk's output(s) for one image, through the chain's own layers (no gradient)."""
    x = np.asarray(image)[None].astype(np.float32)
    for layer in features.layers[1:]:
        x = layer(x, training=False) if layer is features.layers[-1] else layer(x)
    return [np.asarray(o) for o in x] if isinstance(x, (list, tuple)) else np.asarray(x)


def _saliency(features, head, image: np.ndarray, index, class_index: int) -> np.ndarray:
    """``|d score / d pixel|``, the largest over the colour channels (for a map of one cell)."""
    import tensorflow as tf

    chain = features.layers[1:]
    x = tf.convert_to_tensor(np.asarray(image)[None].astype(np.float32))
    for layer in chain[:-1]:  # resize, preprocess
        x = layer(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = chain[-1](x, training=False)
        score = head(out[index] if index is not None else out, training=False)[0, class_index]
    return np.abs(tape.gradient(score, x).numpy()[0]).max(axis=-1)


def _normalise(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    values -= values.min()
    top = values.max()
    return values / top if top > 0 else values


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """``values`` (2-D float) resized to ``height x width`` with bilinear interpolation."""
    from PIL import Image

    resized = Image.fromarray(values.astype(np.float32)).resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def colourise(values: np.ndarray) -> np.ndarray:
    """``(H, W)`` values in [0, 1] -> ``(H, W, 3)`` uint8 colours on the heat ramp."""
    position = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, heat: HeatMap | np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the heat map blended over it (uint8 RGB, same size)."""
    values = heat.values if isinstance(heat, HeatMap) else heat
    colours = colourise(values).astype(np.float32)
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colours
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
