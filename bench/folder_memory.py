"""Peak memory of scanning and of training from a folder of images, at two sizes.

Generates folders of small PNG images (default 2,000 and 20,000, 32x32, 4 classes), then
for each, in its own fresh process: (1) the folder scan (``tl.datasets.scan_folder_cached``,
uncached: every file read and hashed) and (2) a whole
``python -m tl train --dataset folder ... --epochs 1`` run on every image. Peak RSS comes
from ``os.wait4``; this parent never imports TensorFlow (Linux carries a parent's peak RSS
into a child's ``ru_maxrss`` across fork and exec), and generates images with PIL alone.

Target: peak RSS at the large size within 10% of the small size.

    python bench/folder_memory.py
    python bench/folder_memory.py --sizes 2000,20000 --keep /tmp/folders
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("red", "green", "blue", "gray")


def make_folder(root: Path, images: int, side: int) -> Path:
    """``images`` PNGs split over 4 classes: a coloured square on noise per class."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(images)
    colours = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "gray": (128, 128, 128)}
    for n in range(images):
        name = CLASSES[n % len(CLASSES)]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.effect_noise((side, side), 40).convert("RGB")
        x, y = rng.randrange(side // 2), rng.randrange(side // 2)
        ImageDraw.Draw(image).rectangle([x, y, x + side // 3, y + side // 3], fill=colours[name])
        image.save(folder / f"{n:06d}.png")
    return root


def measure(cmd, env) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{out[-1500:]}")
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--keep", help="generate the folders here and keep them (reused when present)")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="tl-folder-bench-"))
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        folder = work / f"images_{size}"
        if not folder.is_dir():
            started = time.perf_counter()
            make_folder(folder, size, args.side)
            print(f"generated {size:,} images in {time.perf_counter() - started:.0f} s", flush=True)
        scratch = Path(tempfile.mkdtemp(prefix="tl-folder-bench-run-"))
        env = {**os.environ, "TL_CACHE_DIR": str(scratch / "cache"), "TL_RUNS_DIR": str(scratch / "runs"),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        scan = measure([sys.executable, "-c",
                        "import sys; from tl.datasets import scan_folder_cached; "
                        "print(len(scan_folder_cached(sys.argv[1]).files))", str(folder)], env)
        train = measure([sys.executable, "-m", "tl", "train", "--dataset", "folder", "--data-dir", str(folder),
                         "--backbone", "small_cnn", "--weights", "none", "--strategy", "scratch",
                         "--image-size", str(args.side), "--epochs", "1", "--batch-size", str(args.batch_size),
                         "--samples-per-class", "100000", "--json"], env)
        shutil.rmtree(scratch, ignore_errors=True)
        results.append((size, scan, train))
        print(f"{size:>7,} images: scan peak RSS {scan['peak_rss_mib']:7.1f} MiB ({scan['seconds']:.0f} s), "
              f"train peak RSS {train['peak_rss_mib']:7.1f} MiB ({train['seconds']:.0f} s)", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    (small, s_scan, s_train), (large, l_scan, l_train) = results[0], results[-1]
    for what, a, b in (("scan", s_scan, l_scan), ("train", s_train, l_train)):
        ratio = b["peak_rss_mib"] / a["peak_rss_mib"]
        print(f"{what}: {large:,} / {small:,} images peak RSS ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; "
              "target within 10%)")


if __name__ == "__main__":
    main()
