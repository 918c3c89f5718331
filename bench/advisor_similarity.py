"""The advisor's "similar to ImageNet?" statistic on real image sets, with real weights.

    python bench/advisor_similarity.py [--backbone efficientnet_lite0]

The statistic (tl.advisor.imagenet_confidence): the mean, over images, of the ImageNet
head's largest class probability. Printed for colour photos and crops of them (ImageNet's
kind of image), and for sets from other domains: scikit-image's LFW subset (grey 25x25
faces and non-faces), scikit-learn's 8x8 digit scans, crops of scikit-image's brick /
grass / gravel photos, the synthetic shapes, microscopy and medical images, and crops of
the Hubble deep field. The advisor calls a set similar at or above
tl.advisor.SIMILARITY_THRESHOLD.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def image_sets() -> dict:
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    from lite_features import tasks
    from tl.datasets import synthetic_image

    photos = [getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "cat")]
    photos += list(load_sample_images().images)
    rng = np.random.default_rng(0)
    crops = []
    for photo in photos:
        for _ in range(4):
            y, x = rng.integers(0, np.array(photo.shape[:2]) - 160)
            crops.append(photo[y:y + 160, x:x + 160])
    found = tasks()
    hubble = data.hubble_deep_field()
    return {
        f"colour photos ({len(photos)})": photos,
        f"160-px crops of those photos ({len(crops)})": crops,
        "LFW faces and non-faces, grey 25x25 (32)": found["lfw faces vs not (2)"][0][::6][:32],
        "digit scans 8x8 (32)": found["digits (10 classes)"][0][:32],
        "brick/grass/gravel crops (32)": found["brick/grass/gravel crops (3)"][0][::5][:32],
        "synthetic shapes (32)": [synthetic_image(0, i, i % 4) for i in range(32)],
        "retina, immunohistochemistry, cells (3)": [data.retina(), data.immunohistochemistry(),
                                                    np.repeat(data.cell()[..., None], 3, -1)],
        "Hubble deep field crops (8)": [hubble[y:y + 200, x:x + 200] for y in (0, 300) for x in (0, 150, 300, 450)],
    }


def main(argv=None) -> None:
    from PIL import Image

    from tl.advisor import SIMILARITY_THRESHOLD, _imagenet_classifier, imagenet_confidence
    from tl.backbones import BACKBONES, preprocess_affine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args(argv)
    spec = BACKBONES[args.backbone]
    model = _imagenet_classifier(spec, "imagenet")
    kernel, bias = preprocess_affine(spec.preprocess)
    print(f"{args.backbone}, threshold {SIMILARITY_THRESHOLD}")
    for name, images in image_sets().items():
        batch = np.stack([np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
                                     .resize((spec.native_size,) * 2, Image.BILINEAR)) for image in images])
        probs = model.predict(batch.astype("float32") @ kernel + bias, verbose=0)
        score = imagenet_confidence(probs)
        verdict = "similar" if score >= SIMILARITY_THRESHOLD else "different"
        print(f"{name:45} {score:.3f} -> {verdict}", flush=True)


if __name__ == "__main__":
    main()
