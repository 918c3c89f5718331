"""Which input normalisation EfficientNet-Lite0's pip weights expect, measured.

    python bench/lite_normalisation.py

The candidates: torchvision's per-channel mean/std (what a PyTorch checkpoint usually
wants), ``(x - 127) / 128`` (the original TensorFlow Lite models) and ``x / 255``. Two
measurements on real photos shipped with scikit-image and scikit-learn (resized to 224):

1. The stem's BatchNorm keeps the running mean and variance of the stem convolution's
   output over the training images. Feed the photos normalised each way through the stem
   convolution and compare: mean |log(variance / running variance)| and mean |(mean -
   running mean) / running std| over the channels (lower: closer to what the network saw).
2. The ImageNet head's mean top-1 probability over the photos, and chelsea's and coffee's
   top class.
"""

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CANDIDATES = {
    "torchvision mean/std": lambda x: (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
    "(x - 127) / 128": lambda x: (x - 127.0) / 128.0,
    "x / 255": lambda x: x / 255.0,
}


def photos() -> dict:
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    found = {name: getattr(skimage.data, name)() for name in
             ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "cat", "retina", "immunohistochemistry")}
    found.update(zip(("china", "flower"), load_sample_images().images))
    return {name: np.asarray(Image.fromarray(image[..., :3]).resize((224, 224), Image.BILINEAR), dtype="float32")
            for name, image in found.items()}


def main() -> None:
    import keras
    from keras.applications.imagenet_utils import decode_predictions

    from tl import efficientnet_lite
    from tl.torch_checkpoint import read_state_dict

    images = photos()
    batch = np.stack(list(images.values()))
    state = read_state_dict(efficientnet_lite.checkpoint_path("efficientnet_lite0"))
    stem = keras.layers.Conv2D(32, 3, 2, padding="same", use_bias=False)
    stem.build((None, 224, 224, 3))
    stem.set_weights([state["_conv_stem.weight"].transpose(2, 3, 1, 0)])
    running_mean, running_var = state["_bn0.running_mean"], state["_bn0.running_var"]
    live = running_var > 1e-2  # channels that are not dead
    classifier = efficientnet_lite.build("efficientnet_lite0")
    print(f"{len(images)} photos; stem channels compared: {int(live.sum())} of 32")
    print(f"{'normalisation':22} {'|log var ratio|':>16} {'|mean z|':>9} {'mean top-1':>11}  chelsea / coffee")
    for name, normalise in CANDIDATES.items():
        x = normalise(batch).astype("float32")
        out = np.asarray(stem(x))
        mean, var = out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))
        log_ratio = np.abs(np.log((var[live] + 1e-6) / running_var[live])).mean()
        offset = np.abs((mean - running_mean) / np.sqrt(running_var + 1e-3))[live].mean()
        probs = classifier.predict(x, verbose=0)
        top = {n: decode_predictions(p[None], top=1)[0][0][1] for n, p in zip(images, probs)}
        print(f"{name:22} {log_ratio:16.3f} {offset:9.3f} {probs.max(axis=1).mean():11.3f}  "
              f"{top['chelsea']} / {top['coffee']}")


if __name__ == "__main__":
    main()
