"""Cold start of the app: from `streamlit run` to a page fully shown in a real browser.

For each page, a fresh ``streamlit run streamlit_app.py`` is started (the browser is
already up, so its own start-up does not count) and timed until the page's *last* element
is visible in headless Chromium: the whole script ran and the browser drew it. Prints the
median of ``--repeats`` starts per page, and when the server's health check first answered.

Needs Debian's chromium (``apt-get install chromium``) and ``pip install playwright``.
Target: home < 3 s on a 2-core machine.

    python bench/app_cold_start.py [--repeats 3]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
# (url path, text of the page's last element)
PAGES = {"home": ("/", "retrain everything from the ImageNet start"),
         "train": ("/train", "No runs yet.")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, runs_dir: str) -> subprocess.Popen:
    env = {**os.environ, "TL_RUNS_DIR": runs_dir}
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_healthy(port: int, deadline: float) -> None:
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise SystemExit("the server did not answer its health check in time")


def measure(browser, page_name: str) -> tuple[float, float]:
    """Seconds from `streamlit run` to (health check answered, page fully shown)."""
    path, last_text = PAGES[page_name]
    port = free_port()
    page = browser.new_page()
    with tempfile.TemporaryDirectory() as runs_dir:
        started = time.perf_counter()
        server = start_server(port, runs_dir)
        try:
            wait_healthy(port, time.time() + 60)
            healthy = time.perf_counter() - started
            page.goto(f"http://127.0.0.1:{port}{path}")
            page.get_by_text(last_text).first.wait_for(timeout=60_000)
            shown = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
            page.close()
    return healthy, shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        print(f"Cold start, median of {args.repeats} fresh `streamlit run` each:")
        for name in PAGES:
            timings = [measure(browser, name) for _ in range(args.repeats)]
            healthy = statistics.median(t[0] for t in timings)
            shown = statistics.median(t[1] for t in timings)
            runs = ", ".join(f"{t[1]:.2f}" for t in timings)
            print(f"  {name:6} page fully shown {shown:5.2f} s  (server healthy at {healthy:.2f} s; runs: {runs})")
        browser.close()


if __name__ == "__main__":
    main()
