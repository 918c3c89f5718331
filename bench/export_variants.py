"""What each TFLite variant of a run costs, measured on the run's own test photos.

    python bench/export_variants.py                                  # Lite0, Lite2 and ResNet-50 (from scratch) on the shapes
    python bench/export_variants.py --backbones efficientnet_lite0,resnet50 --dataset tf_flowers
    python bench/export_variants.py --run RUN_ID [--run RUN_ID ...] [--runs-dir runs]

For each run (trained here with feature extraction at 224 px unless ``--run`` names finished
ones) it prints :func:`tl.variants.measure`'s table, what the app's exports section shows: for
each variant (float32, float16, dynamic-range 8-bit, full-integer int8) the file size, test
accuracy, top-1 agreement with the Keras model, the largest drop in one class's accuracy,
and CPU ms per photo (TFLite interpreter, one photo at a time, after a warm-up), with the
warnings and the recommended variant. The synthetic shapes are easy (every variant may reach
100%): use a real dataset where there is internet for accuracy drops that mean something.

``--browser`` also opens the float web bundle in headless chromium (LiteRT.js served from
``node_modules/``, as in ``tests/test_browser_export_web.py``, whose helpers it uses), picks
every test photo at its own size, and prints the page's top-1 agreement with the Keras model,
its largest and median probability difference, and its ms per photo.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def page_agreement(run) -> dict:
    """The web page's answers on the run's test photos (PNG, their own size) against Keras's."""
    import json
    import zipfile

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests"))
    from test_browser_export_web import open_page, from_node_modules, static_server
    from test_e2e_browser import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    from tl import datasets, export

    data = datasets.load(run.config)
    folder = Path(tempfile.mkdtemp(prefix="page-agreement-"))
    model = run.load_model()
    paths, reference = [], []
    for i in np.asarray(data.splits["test"]):
        image = data.reader(int(i))
        paths.append(str(folder / f"{int(i)}.png"))
        Image.fromarray(image).save(paths[-1])
        reference.append(model.predict(image[None].astype("float32"), verbose=0)[0])
    with zipfile.ZipFile(export.export(run, "web", folder)) as archive:
        archive.extractall(folder / "site")
    with static_server(folder / "site" / f"{run.id}-web") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page, _ = open_page(browser, url, from_node_modules)
        started = time.monotonic()
        page.wait_for_selector('body[data-ready="true"]')
        load = time.monotonic() - started
        page.locator('[data-testid="photos"]').set_input_files(paths)
        page.wait_for_selector(f'body[data-done="{len(paths)}"]', timeout=600_000)
        cards = page.locator('[data-testid="result"]')
        shown = {Path(cards.nth(n).get_attribute("data-file")).stem: (json.loads(cards.nth(n).get_attribute("data-probs")),
                                                                      float(cards.nth(n).get_attribute("data-ms")))
                 for n in range(cards.count())}
        browser.close()
    probs = np.array([shown[Path(path).stem][0] for path in paths])
    reference = np.array(reference)
    gaps = np.abs(probs - reference)
    return {"agreement": (probs.argmax(axis=1) == reference.argmax(axis=1)).mean(), "max_diff": gaps.max(),
            "median_diff": float(np.median(gaps)), "ms": float(np.median([ms for _, ms in shown.values()])),
            "load_s": load, "photos": len(paths)}


def print_table(title: str, result: dict) -> None:
    rows = result["rows"]
    print(f"\n{title} ({result['photos']} test photos)")
    print(f"{'variant':<10} {'MB':>7} {'accuracy':>9} {'agreement':>10} {'worst class drop':>17} "
          f"{'max |diff|':>11} {'ms/photo':>9}")
    for row in rows:
        print(f"{row['variant']:<10} {row['bytes'] / 1e6:7.2f} {row['accuracy']:9.1%} {row['agreement']:10.1%} "
              f"{row['worst_drop'] * 100:13.1f} pts {row['max_diff']:11.4f} {row['ms']:9.1f}")
    for sentence in result["warnings"]:
        print(f"Warning: {sentence}")
    print(f"Recommended: {result['recommended']} (the smallest within 2 points of the Keras model's accuracy).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], help="a finished run to measure (repeatable)")
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite2,resnet50:scratch",
                        help="backbones to train with feature extraction from their ImageNet weights; NAME:scratch "
                             "trains NAME from random weights at 64 px instead (ResNet-50's ImageNet weights "
                             "download on first use: offline, it is trained here from scratch, and labelled so)")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--samples-per-class", type=int, default=60)
    parser.add_argument("--browser", action="store_true", help="also measure the web page in headless chromium")
    args = parser.parse_args()

    from tl import runs, training, variants
    from tl.config import RunConfig

    if args.run:
        chosen = [runs.get(run_id, args.runs_dir) for run_id in args.run]
    else:
        root = tempfile.mkdtemp(prefix="export-variants-")
        chosen = []
        for spec in args.backbones.split(","):
            backbone, _, how = spec.partition(":")
            if how == "scratch":
                cfg = RunConfig(dataset=args.dataset, data_dir=args.data_dir, backbone=backbone, weights="none",
                                strategy="scratch", image_size=64, epochs=4,
                                samples_per_class=args.samples_per_class, name=f"export variants: {backbone} from scratch")
            else:
                cfg = RunConfig(dataset=args.dataset, data_dir=args.data_dir, backbone=backbone, weights="imagenet",
                                strategy="feature_extraction", image_size=224,
                                samples_per_class=args.samples_per_class, name=f"export variants: {backbone}")
            run = training.prepare(cfg, root)
            training.execute(run, root)
            chosen.append(run)
    for run in chosen:
        cfg = run.config
        weights = "random weights, trained here from scratch" if cfg.weights == "none" else f"{cfg.weights} weights"
        title = (f"{cfg.backbone} ({weights}; {cfg.strategy}, {cfg.image_size} px) on {cfg.dataset}, run {run.id}, "
                 "trained here; "
                 f"{os.cpu_count()} CPU cores")
        print_table(title, variants.measure(run))
        if args.browser:
            page = page_agreement(run)
            print(f"web page (float32, chromium, LiteRT.js wasm) on {page['photos']} test photos at their own size: "
                  f"top-1 agreement {page['agreement']:.1%}, max |diff| {page['max_diff']:.2e}, median "
                  f"{page['median_diff']:.2e}, {page['ms']:.0f} ms/photo (median), loaded in {page['load_s']:.1f} s")


if __name__ == "__main__":
    main()
