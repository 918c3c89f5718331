"""Entry point of ``python -m tl``."""

import os
import sys

from tl.cli import main

if __name__ == "__main__":
    code = main()
    if code and os.environ.get("TF_CONFIG"):
        # A worker of a cluster whose peer failed can hang in TensorFlow's teardown (a
        # tf.data iterator waiting on a thread that waits on it); its run and output are
        # complete by now, so leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
