"""The synthetic dataset: shapes drawn on noisy backgrounds, deterministic in the seed, offline."""

import numpy as np

from tl.data.core import Data, content_hash

SYNTHETIC_SHAPES = ("disk", "square", "triangle", "ring", "cross",
                    "stripes", "checker", "diamond", "frame", "dots")
SYNTHETIC_SIZE = 32
SYNTHETIC_DEFAULT_PER_CLASS = 200


def synthetic_image(seed: int, index: int, label: int, size: int = SYNTHETIC_SIZE) -> np.ndarray:
    """Draw item ``index`` of the synthetic dataset: a shape of class ``label`` on noise.

    Deterministic in ``(seed, index)``. Position, size, colours, a background gradient and
    pixel noise vary, so the task is learnable but not trivial.
    """
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    r = rng.uniform(0.22, 0.36) * size
    dx, dy = xx - cx, yy - cy
    mask = _shape_mask(SYNTHETIC_SHAPES[label], dx, dy, r, rng, size)

    background = rng.uniform(0, 255, 3)
    foreground = rng.uniform(0, 255, 3)
    while np.linalg.norm(foreground - background) < 110:
        foreground = rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) / size * rng.uniform(-40, 40)
    image = np.where(mask[..., None], foreground, background + gradient[..., None])
    image += rng.normal(0, 12, image.shape)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _shape_mask(shape, dx, dy, r, rng, size):
    dist = np.hypot(dx, dy)
    box = np.maximum(np.abs(dx), np.abs(dy))
    if shape == "disk":
        return dist <= r
    if shape == "square":
        return box <= 0.85 * r
    if shape == "triangle":
        inside = (dy >= -r) & (dy <= 0.7 * r)
        return inside & (np.abs(dx) <= (dy + r) / 1.7)
    if shape == "ring":
        return (dist <= r) & (dist >= 0.6 * r)
    if shape == "cross":
        arm = 0.3 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "stripes":
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(0.35, 0.5) * r
        phase = (np.cos(theta) * dx + np.sin(theta) * dy) / period
        return (box <= r) & (np.floor(phase) % 2 == 0)
    if shape == "checker":
        cell = rng.uniform(0.4, 0.6) * r
        return (box <= r) & ((np.floor(dx / cell) + np.floor(dy / cell)) % 2 == 0)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1 * r
    if shape == "frame":
        return (box <= r) & (box >= 0.6 * r)
    if shape == "dots":
        mask = np.zeros(dx.shape, dtype=bool)
        for _ in range(3):
            ox, oy = rng.uniform(-0.7, 0.7, 2) * r
            mask |= np.hypot(dx - ox, dy - oy) <= 0.3 * r
        return mask
    raise ValueError(shape)


def load_synthetic(cfg, runs_dir=None) -> Data:
    n_classes = cfg.synthetic_classes
    per_class = cfg.samples_per_class or SYNTHETIC_DEFAULT_PER_CLASS
    labels = np.arange(n_classes * per_class) % n_classes
    seed = cfg.seed

    def reader(index):
        return synthetic_image(seed, index, int(labels[index]))

    identity = f"synthetic:v1:classes={n_classes}:per_class={per_class}:seed={seed}"
    return Data(
        name="synthetic",
        class_names=list(SYNTHETIC_SHAPES[:n_classes]),
        labels=labels,
        keys=[f"synthetic/{i}" for i in range(len(labels))],
        fingerprint=content_hash([identity]),
        image_size=SYNTHETIC_SIZE,
        reader=reader,
    )
