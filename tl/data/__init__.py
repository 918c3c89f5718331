"""The data layer: generated images, your folders and public downloads become a
:class:`tl.data.core.Data`, then tf.data streams. :mod:`tl.datasets` gathers the public names."""
