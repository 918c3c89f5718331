"""Transfer Learning Studio backend.

Plain Python: never imports streamlit, and TensorFlow only inside the functions that
need it, so ``import tl`` (and the registries) stays fast.
"""

__version__ = "0.1.0"
