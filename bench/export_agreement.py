"""How closely the exported TFLite models follow the Keras model, and how big they are.

    python bench/export_agreement.py

Trains the same small run as tests/test_export.py (small_cnn from scratch, 16 px, 4
synthetic classes, 300 images each, 5 epochs), exports TFLite float and dynamic-range
quantised, and prints on the test images: top-1 agreement with the Keras model, the largest
probability difference, and the file sizes. The tests assert the targets (1e-3 and >= 95%);
this prints the figures.
"""

import os
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 16


def tflite_probs(path, images):
    import numpy as np
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    out = []
    for image in images:
        interpreter.resize_tensor_input(given["index"], (1, *image.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], image[None])
        interpreter.invoke()
        out.append(interpreter.get_tensor(taken["index"])[0])
    return np.array(out)


def main() -> None:
    import numpy as np
    import tensorflow as tf

    from tl import datasets, export, training
    from tl.config import RunConfig

    root = tempfile.mkdtemp(prefix="export-bench-")
    cfg = RunConfig(dataset="synthetic", backbone="small_cnn", weights="none", strategy="scratch",
                    image_size=SIZE, synthetic_classes=4, samples_per_class=300, batch_size=32, epochs=5,
                    learning_rate=3e-3)
    run = training.prepare(cfg, root)
    training.execute(run, root)
    data = datasets.load(cfg)
    resized = tf.image.resize(data.read_batch(data.splits["test"]), (SIZE, SIZE), antialias=True)
    images = np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
    probs = run.load_model().predict(images.astype("float32"), verbose=0)
    keras_size = run.model_path.stat().st_size
    print(f"Keras model: test accuracy {run.metrics['test_accuracy']:.3f} on {len(images)} test images, "
          f"{keras_size / 1024:.0f} KB")
    for quantize in (False, True):
        path = export.export(run, "tflite", Path(root) / f"model{'-int8' if quantize else ''}.tflite",
                             quantize=quantize)
        lite = tflite_probs(path, images)
        agree = (lite.argmax(axis=1) == probs.argmax(axis=1)).mean()
        print(f"TFLite {'dynamic-range int8' if quantize else 'float':18}: top-1 agreement {agree:.1%}, "
              f"max probability difference {np.abs(lite - probs).max():.1e}, {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
