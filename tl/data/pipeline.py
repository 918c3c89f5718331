"""tf.data pipelines over a :class:`tl.data.core.Data`: read, batch, augment, prefetch
(resizing to the model's input happens inside the model)."""

import numpy as np

from tl.data.core import Data


def image_pipeline(data: Data, indices, batch_size: int, *, image_size: int, shuffle: bool = False,
                   seed: int = 0, augment: bool = False, class_weights=None):
    """Stream items ``indices`` as ``(images, labels[, sample_weights])`` batches.

    Images stay uint8 at their stored size (the model resizes them) unless the items vary
    in size, in which case each is resized to ``image_size`` so they can be batched, with the
    model's own resize (bilinear, anti-aliased) and kept in float32: rounded back to uint8, an
    enlarged small image (an 8x8 scan at 224 px) gave features measurably unlike the ones the
    saved model computes from the same file (cosine 0.995), and so a gallery, a calibration and
    a "none of my classes" rule a little unlike what Classify serves.
    """
    import tensorflow as tf

    indices = np.asarray(indices, dtype=np.int64)
    labels = data.labels[indices].astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((indices, labels))
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    autotune = tf.data.AUTOTUNE

    if data.image_size is None:
        def read_one(index):
            image = tf.numpy_function(data.read, [index], tf.uint8, stateful=False)
            image.set_shape([None, None, 3])
            return tf.image.resize(image, (image_size, image_size), antialias=True)  # float32, as the model's

        ds = ds.map(lambda i, y: (read_one(i), y), num_parallel_calls=autotune)
        ds = ds.batch(batch_size)
    else:
        side = data.image_size

        def read_many(batch_indices):
            images = tf.numpy_function(data.read_batch, [batch_indices], tf.uint8, stateful=False)
            images.set_shape([None, side, side, 3])
            return images

        ds = ds.batch(batch_size).map(lambda i, y: (read_many(i), y), num_parallel_calls=autotune)

    if augment:
        augmenter = make_augmenter(seed)
        ds = ds.map(lambda x, y: (augmenter(tf.cast(x, tf.float32), training=True), y),
                    num_parallel_calls=autotune)
    if class_weights is not None:
        table = tf.constant(np.asarray(class_weights, dtype=np.float32))
        ds = ds.map(lambda x, y: (x, y, tf.gather(table, y)))
    return ds.prefetch(autotune)


def make_augmenter(seed: int = 0):
    """Random flips, small rotations, zooms and shifts, applied in the input pipeline.

    They run in ``tf.data`` rather than inside the model, so the saved model holds no
    training-only layers.
    """
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 3),
        ],
        name="augment",
    )
