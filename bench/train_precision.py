"""Training steps on the CPU in float32 against Keras's ``mixed_bfloat16`` policy.

    python bench/train_precision.py [--size 160] [--batch 16] [--steps 6] [--repeats 2]

For EfficientNet-Lite0 and ResNet-50 (random weights: the same arithmetic as ImageNet's),
the image phases of the strategies: ``frozen`` (the head trains on images through the
frozen backbone), ``fine_tune`` (the top 10 weighted layers train), ``full_fine_tune`` and
``scratch`` (everything trains; scratch's BatchNorm too). The policy is global to a process,
so each (backbone, policy) pair runs in its own process, and the pairs alternate
(float32 first, then bf16 first). Prints images/s per phase after one warm-up step, the ratio
bf16/fp32, and the CPU's flags (bf16 arithmetic is native only with AVX512-BF16 or AMX;
elsewhere oneDNN emulates it).

The project trains in float32 on every CPU (``tl/devices.py``) unless this script shows
bf16 faster on the CPU at hand; a run records its policy as ``train_precision``.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PHASES = ("frozen", "fine_tune", "full_fine_tune", "scratch")


def measure(backbone: str, policy: str, size: int, batch: int, steps: int) -> dict:
    """images/s per phase, in this process, under ``policy``."""
    import keras
    import numpy as np

    from tl.backbones import set_trainable_top
    from tl.config import RunConfig
    from tl.models import build

    keras.mixed_precision.set_global_policy(policy)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 4, batch)
    found = {}
    for phase in PHASES:
        strategy = "scratch" if phase == "scratch" else phase
        model = build(RunConfig(backbone=backbone, weights="none", strategy=strategy, image_size=size), 4)
        backbone_model = model.get_layer("backbone")
        if phase == "frozen":
            backbone_model.trainable = False
        elif phase == "fine_tune":
            set_trainable_top(backbone_model, 10, False)
        else:
            set_trainable_top(backbone_model, None, phase == "scratch")
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        model.train_on_batch(images, labels)  # trace
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(images, labels)
        found[phase] = steps * batch / (time.perf_counter() - started)
    return found


def main(argv=None) -> None:
    from tl.engine import cpu_flags

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("BACKBONE", "POLICY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*args.one, args.size, args.batch, args.steps)))
        return
    print(f"CPU: {cpu_flags()}")
    print(f"Training steps, {args.size} px, batch {args.batch}, {args.steps} steps after one warm-up (images/s):")
    for backbone in ("efficientnet_lite0", "resnet50"):
        rates = {"float32": [], "mixed_bfloat16": []}
        for repeat in range(args.repeats):
            order = ("float32", "mixed_bfloat16") if repeat % 2 == 0 else ("mixed_bfloat16", "float32")
            for policy in order:
                out = subprocess.run([sys.executable, __file__, "--one", backbone, policy, "--size", str(args.size),
                                      "--batch", str(args.batch), "--steps", str(args.steps)],
                                     capture_output=True, text=True, check=True, cwd=REPO)
                rates[policy].append(json.loads(out.stdout.splitlines()[-1]))
        for phase in PHASES:
            fp32 = [r[phase] for r in rates["float32"]]
            bf16 = [r[phase] for r in rates["mixed_bfloat16"]]
            ratio = sorted(b / f for b, f in zip(bf16, fp32))[len(fp32) // 2]
            print(f"  {backbone:20} {phase:15} float32 {max(fp32):6.1f}  mixed_bfloat16 {max(bf16):6.1f}  "
                  f"bf16/fp32 {ratio:4.2f}x", flush=True)


if __name__ == "__main__":
    main()
