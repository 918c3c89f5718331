"""Calibrate and check tl.run_cost: memory and time estimates against measured runs.

Two parts:

1. ``--table``: for every backbone (weights none), its parameter count, the sum of every
   layer's output elements per input pixel (activation memory scales with it), and its
   feature width, as the Python literal tl.run_cost's ``BACKBONE_COSTS`` holds.
2. ``--measure`` (default): real ``python -m tl train`` runs, each in its own process
   (peak RSS from ``os.wait4``, wall time), printed beside tl.run_cost's estimate.

    python bench/budget_calibration.py --table
    python bench/budget_calibration.py            # the measured runs
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (label, config overrides) on the synthetic dataset, weights none (same compute as ImageNet).
RUNS = [
    ("baseline small_cnn 16px", dict(backbone="small_cnn", strategy="scratch", image_size=16, batch_size=32)),
    ("resnet50 feature_extraction 128 b32", dict(backbone="resnet50", strategy="feature_extraction",
                                                 image_size=128, batch_size=32)),
    ("resnet50 fine_tune 128 b32", dict(backbone="resnet50", strategy="fine_tune", image_size=128, batch_size=32)),
    ("mobilenet_v2 full_fine_tune 128 b32", dict(backbone="mobilenet_v2", strategy="full_fine_tune",
                                                 image_size=128, batch_size=32)),
    ("resnet50 full_fine_tune 160 b32", dict(backbone="resnet50", strategy="full_fine_tune",
                                             image_size=160, batch_size=32)),
]
COMMON = dict(dataset="synthetic", weights="none", synthetic_classes=2, samples_per_class=48, epochs=1,
              fine_tune_epochs=1)


def table(size: int = 224) -> dict:
    import keras

    from tl.backbones import BACKBONES, build_backbone

    found = {}
    for name, spec in BACKBONES.items():
        side = max(size, spec.min_size) if name not in ("small_cnn", "perceptron") else 32
        model = build_backbone(name, side, weights=None)
        elements = sum(_elements(layer.output) for layer in model.layers[1:])
        found[name] = (int(model.count_params()), round(elements / (side * side), 2),
                       int(model.output.shape[-1]))
        keras.backend.clear_session()
    return found


def _elements(output) -> int:
    import math

    outputs = output if isinstance(output, (list, tuple)) else [output]
    return sum(math.prod(d for d in o.shape[1:]) for o in outputs)


def measure(label: str, overrides: dict) -> dict:
    from tl import run_cost
    from tl.config import RunConfig

    cfg = RunConfig(**{**COMMON, **overrides})
    estimate = run_cost.estimate(cfg, cfg.samples_per_class * cfg.synthetic_classes)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(cfg.to_json())
        started = time.time()
        env = {**os.environ, "TL_MEMORY_BUDGET_MB": "0"}
        proc = subprocess.Popen([sys.executable, "-m", "tl", "train", "--config", str(config), "--runs-dir",
                                 str(Path(tmp) / "runs"), "--json"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = proc.stdout.read()
        _, _, usage = os.wait4(proc.pid, 0)
        seconds = time.time() - started
    summary = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    return {"run": label, "status": summary.get("status"), "peak_mb": round(usage.ru_maxrss / 1024),
            "estimate_mb": round(estimate.memory_mb), "seconds": round(seconds, 1),
            "estimate_s": round(estimate.seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print the per-backbone cost table")
    args = parser.parse_args()
    if args.table:
        for name, row in table().items():
            print(f"    {name!r}: {row},")
        return
    print(f"{'run':40} {'status':7} {'peak MB':>8} {'est. MB':>8} {'wall s':>7} {'est. s':>7}")
    for label, overrides in RUNS:
        row = measure(label, overrides)
        print(f"{row['run']:40} {row['status'] or '-':7} {row['peak_mb']:8} {row['estimate_mb']:8} "
              f"{row['seconds']:7} {row['estimate_s']:7}", flush=True)


if __name__ == "__main__":
    main()
