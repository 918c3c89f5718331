"""Classroom load: many sessions on one ``streamlit run`` while training runs in the background.

    python bench/load.py --sessions 10 --minutes 3 [--budget-mb 2500] [--out report.json]
    python bench/load.py --quick        # 2 sessions, 30 s, disconnected sessions kept 5 s

Sets up a temporary runs folder (in a child process, so that TensorFlow never loads here): a
finished EfficientNet-Lite0 ``feature_extraction`` run from its real ImageNet weights for
Classify, a queue of training runs (Lite0 ``fine_tune`` at 128 px and ``small_cnn`` from
scratch, about a minute each on 2 cores) that the app's job manager adopts when the first
session opens a page, so that its worker trains all the time, and a made dataset for Data.
Then it starts ``streamlit run streamlit_app.py`` on a free loopback port (``TL_MAX_JOBS=1``,
``TL_MEMORY_BUDGET_MB`` when ``--budget-mb`` is given) and drives N sessions with
``bench/stsession.py`` (Streamlit's own websocket protocol, no browser), each looping a
visit until the time is up: Home; Classify on the finished run with 1-3 real photos
(scikit-image's samples as JPEG; both heads' charts must be there); Grad-CAM on and off;
Train on the running run, watching its live fragment for a few seconds; Compare; Data.
Each visit is a new tab (a new session; the last one closed).

Every 0.5 s it samples the RSS of the server, of its child processes (the training workers:
their own session, still its children) and of this load generator (reported apart). After
the time is up it closes every session, waits ``server.disconnectedSessionTTL`` + 30 s and
samples the server again. It prints a table, the PASS/FAIL of each target, and with
``--out`` writes it all as JSON (the server's log beside it).

Targets: no session errors; warm Classify p95 < 3 s; Grad-CAM on p95 <= 5 s; peak server + workers RSS < the budget
(2,500 MB unless ``--budget-mb``); server RSS after close + TTL + 30 s within 150 MB of its
RSS after the first Classify; a training worker alive all along (no stretch over 2 s
without one: the job manager starts the next queued run within its 0.5 s poll).
"""

import argparse
import concurrent.futures
import functools
import io
import json
import math
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from stsession import Session  # noqa: E402

MAX_SESSIONS, MAX_MINUTES = 50, 30
SAMPLE_SECONDS = 0.5
UPLOADER = "Images ("  # Classify's st.file_uploader ("Images (JPEG, PNG, ...)")
GRADCAM = "Grad-CAM"  # Classify's toggle ("Show where each head looks (Grad-CAM)")
PICTURES = ("chelsea", "coffee", "astronaut", "rocket")
WARM_P95_SECONDS = 3.0
GRADCAM_P95_SECONDS = 5.0  # issue 31: the toggle answered (both heads' maps of 1-3 photos drawn)
SETTLE_MB = 150
MAX_WORKER_GAP_SECONDS = 2.0
FIRST_WORKER_SECONDS = 10.0  # the warm-up opens Train: the job manager starts the queue
CACHE_LINE = re.compile(r"^tl cache (models|data): (load|evict)\b")


# -- the runs folder (built in a child process: TensorFlow stays out of this one) ---------

def _prepare(root: str, queued: int, budget_mb) -> dict:
    """A finished Lite0 run, ``queued`` training runs and a made dataset in ``root``."""
    if budget_mb:
        os.environ["TL_MEMORY_BUDGET_MB"] = str(budget_mb)
    sys.path.insert(0, str(REPO))
    from tl import training
    from tl.config import RunConfig
    from tl.data import made

    lite = training.prepare(RunConfig(
        backbone="efficientnet_lite0", weights="imagenet", strategy="feature_extraction", image_size=224,
        batch_size=64, epochs=1, samples_per_class=8, synthetic_classes=2, min_steps=0, early_stopping=0,
        name="load: lite0 for classify"), root)
    training.execute(lite, root)
    kinds = (RunConfig(backbone="efficientnet_lite0", weights="imagenet", strategy="fine_tune", image_size=128,
                       samples_per_class=60, fine_tune_epochs=3, name="load: lite0 fine_tune"),
             RunConfig(backbone="small_cnn", weights="none", strategy="scratch", image_size=64,
                       samples_per_class=100, epochs=10, early_stopping=0, name="load: small_cnn scratch"))
    ids = [training.prepare(kinds[i % 2], root).id for i in range(queued)]
    dataset = made.create_dataset("Classroom photos", root)
    for picture in PICTURES[:2]:
        made.add_photos(dataset.id, picture, [(f"{picture}-{i}.jpg", photo(i, picture)) for i in range(4)], root)
    return {"lite": lite.id, "queued": ids, "data": dataset.id}


@functools.lru_cache(maxsize=None)
def _picture(name: str):
    import skimage.data

    return getattr(skimage.data, name)()


def photo(i: int, picture: str) -> bytes:
    """A JPEG crop of one of scikit-image's sample photographs; each ``i`` other bytes."""
    from PIL import Image

    image = _picture(picture)
    h, w = image.shape[:2]
    y, x = (i * 7) % (h // 3), (i * 13) % (w // 3)
    out = io.BytesIO()
    Image.fromarray(image[y:y + h // 2, x:x + w // 2]).save(out, "JPEG", quality=90)
    return out.getvalue()


# -- the server and its processes ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path, log: Path, ttl: int, budget_mb) -> tuple:
    """``streamlit run`` on a free loopback port; returns (process, url)."""
    port = free_port()
    env = {**os.environ, "TL_RUNS_DIR": str(root), "TL_MAX_JOBS": "1", "PYTHONPATH": str(REPO)}
    env.pop("TL_MEMORY_BUDGET_MB", None)
    if budget_mb:
        env["TL_MEMORY_BUDGET_MB"] = str(budget_mb)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--server.disconnectedSessionTTL", str(ttl)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return process, url
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("streamlit did not start:\n" + log.read_text()[-2000:])
            time.sleep(0.2)


def session_ttl(quick: bool) -> int:
    """The disconnected-session TTL this bench passes to the server: 5 s with ``--quick``,
    else the app's ``.streamlit/config.toml`` value, else Streamlit's default (120 s)."""
    if quick:
        return 5
    config = REPO / ".streamlit" / "config.toml"
    if config.is_file():
        return int(tomllib.loads(config.read_text()).get("server", {}).get("disconnectedSessionTTL", 120))
    return 120


def rss_mb(pid) -> float:
    """Resident memory of ``pid`` in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list:
    """Every process below ``pid`` (by parent id, at any depth), as (pid, command line)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            command = (Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
        found.append((child, command))
        todo.extend(children.get(child, []))
    return found


class Sampler(threading.Thread):
    """RSS of the server, of its children (training workers) and of this process, every
    ``SAMPLE_SECONDS``; remembers every worker it saw so that they can be stopped."""

    def __init__(self, server_pid: int):
        super().__init__(name="sampler", daemon=True)
        self.server_pid = server_pid
        self.samples = []  # (t, server MB, children MB, workers alive, own MB)
        self.workers = {}  # pid -> command line
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.samples.append(self.sample())
            self._stop_event.wait(SAMPLE_SECONDS)

    def sample(self) -> tuple:
        below = descendants(self.server_pid)
        workers = [pid for pid, command in below if " tl worker " in f" {command} "]
        for pid, command in below:
            self.workers.setdefault(pid, command)
        return (time.time(), rss_mb(self.server_pid), sum(rss_mb(pid) for pid, _ in below), len(workers),
                rss_mb(os.getpid()))

    def stop(self):
        self._stop_event.set()
        self.join()


def stop_server(process, workers: dict) -> None:
    """Stop the server, then the training workers it started (``{pid: command line}``, as
    :class:`Sampler` saw them: their own sessions outlive the server)."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid, command in workers.items():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") == command:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def metrics(url: str) -> dict:
    """``/_stcore/metrics`` as {series with labels: value}."""
    with urllib.request.urlopen(f"{url}/_stcore/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


# -- the sessions -------------------------------------------------------------------------

class Recorder:
    """Thread-safe record of every action's latency and every error."""

    def __init__(self):
        self.lock = threading.Lock()
        self.actions = []  # (name, start, seconds)
        self.errors = []  # (session, action, message)
        self.first_classify = None  # (finished at, server MB then)
        self.first_visit = None  # (finished at, server MB then): every page has run once
        self.photos = 0  # photos classified with both heads' charts drawn

    def add(self, name, start, seconds):
        with self.lock:
            self.actions.append((name, start, seconds))

    def error(self, who, action, message):
        with self.lock:
            self.errors.append((who, action, str(message)[:300]))


def running_run(root: Path):
    """Id of the run training now, if any (read from the run folders' status files)."""
    for status in root.glob("*/status.json"):
        try:
            if json.loads(status.read_text()).get("status") == "running":
                return status.parent.name
        except (OSError, ValueError):
            continue
    return None


def visitor(index: int, url: str, root: Path, setup: dict, end: float, think: float, server_pid: int,
            record: Recorder) -> None:
    """One student: visits, each in a new tab, until ``end`` (a visit under way is finished)."""
    rng = random.Random(index)
    visit = 0
    while time.time() < end:
        visit += 1
        try:
            with Session(url, timeout=240) as tab:
                _visit(tab, index, visit, rng, root, setup, think, server_pid, record)
            with record.lock:
                if record.first_visit is None:
                    record.first_visit = (time.time(), rss_mb(server_pid))
        except Exception as exc:  # noqa: BLE001 - counted and shown; the student opens a new tab
            record.error(index, "visit", f"{type(exc).__name__}: {exc}")
            time.sleep(1)


def _visit(tab, index, visit, rng, root, setup, think, server_pid, record) -> None:
    """Home; Classify with two uploads of 1-3 photos; Grad-CAM on and off; Train on the
    running run, watching it 5 s; Compare; Data."""
    def act(name, call, check=None):
        start = time.time()
        outcome = call()
        record.add(name, start, outcome.seconds)
        for message in outcome.errors:
            record.error(index, name, message)
        if check:
            check(outcome)
        time.sleep(think * rng.uniform(0.5, 1.5))
        return outcome

    def classify(round_):
        count = rng.randint(1, 3)
        files = [(f"{picture}-{index}-{visit}-{round_}.jpg", photo(index * 1000 + visit * 10 + round_, picture))
                 for picture in rng.sample(PICTURES, count)]

        def check(outcome):
            found = len(tab.elements("plotly_chart"))
            if found < 2 * count and not outcome.errors:  # a page error is counted once, above
                record.error(index, "classify", f"{found} charts for {count} photos (both heads: {2 * count})")
            with record.lock:
                if found >= 2 * count:
                    record.photos += count
                if record.first_classify is None and found >= 2 * count:
                    record.first_classify = (time.time(), rss_mb(server_pid))

        act("classify", lambda: tab.upload(UPLOADER, files), check)

    act("home", lambda: tab.open(""))
    act("classify open", lambda: tab.open("classify", run=setup["lite"]))
    classify(1)
    classify(2)  # another photo or two: the model is loaded now
    act("grad-cam on", lambda: tab.toggle(GRADCAM, True))
    act("grad-cam off", lambda: tab.toggle(GRADCAM, False))
    training = running_run(root)
    act("train open", lambda: tab.open("train", **({"run": training} if training else {})))
    for outcome in tab.idle(5.0):
        record.add("train fragment", time.time() - outcome.seconds, outcome.seconds)
        for message in outcome.errors:
            record.error(index, "train fragment", message)
    act("compare", lambda: tab.open("compare"))
    act("data", lambda: tab.open("data", data=setup["data"]))


# -- figures ------------------------------------------------------------------------------

def percentile(values, q) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarise(record: Recorder) -> tuple:
    """Per-action figures, with the classifies that waited for the first model load apart."""
    classifies = [(start, seconds) for name, start, seconds in record.actions if name == "classify"]
    first_done = min((start + seconds for start, seconds in classifies), default=None)
    first_load = min(classifies)[1] if classifies else None
    table = {}
    for name, start, seconds in record.actions:
        if name == "classify" and start < first_done:
            name = "classify (model loading)"
        table.setdefault(name, []).append(seconds)
    rows = {name: {"count": len(values), "p50_s": percentile(values, 50), "p95_s": percentile(values, 95),
                   "max_s": max(values)} for name, values in table.items()}
    return rows, first_load


def worker_gaps(samples, start: float, end: float) -> dict:
    """When a training worker first ran after ``start``, and the longest stretch without one
    from then until ``end``, by the samples."""
    window = [s for s in samples if start <= s[0] <= end]
    seen = [t for t, _, _, workers, _ in window if workers]
    longest, last_seen = 0.0, seen[0] if seen else end
    for t, _, _, workers, _ in window:
        if t < last_seen:
            continue
        if workers:
            last_seen = t
        else:
            longest = max(longest, t - last_seen)
    steps = [b[0] - a[0] for a, b in zip(window, window[1:])]
    return {"samples": len(window), "with_worker": len(seen), "longest_gap_s": round(longest, 2),
            "first_worker_after_s": round(seen[0] - start, 1) if seen else None,
            "longest_sample_step_s": round(max(steps), 2) if steps else None}


def handovers(root: Path, run_ids) -> list:
    """Seconds from one queued run's end (its status.json ``finished``) to the next one's
    start (``started``, written by the job manager as it spawns the worker), in start order:
    the job manager's own share of any gap the samples show."""
    times = []
    for run_id in run_ids:
        try:
            status = json.loads((root / run_id / "status.json").read_text())
        except (OSError, ValueError):
            continue
        if status.get("started"):
            times.append((status["started"], status.get("finished")))
    times.sort()
    return [round(nxt[0] - prev[1], 2) for prev, nxt in zip(times, times[1:]) if prev[1]]


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    memory = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(memory / 2**20, 1)}


def cache_lines(log: Path) -> dict:
    counts = {}
    for line in log.read_text(errors="replace").splitlines():
        found = CACHE_LINE.match(line)
        if found:
            key = f"{found.group(1)} {found.group(2)}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def print_report(report: dict) -> None:
    print(f"\nClassroom load: {report['config']['sessions']} sessions for {report['config']['minutes']} min "
          f"on {report['machine']['cpu']} ({report['machine']['cores']} cores, {report['machine']['memory_gb']} GB)")
    print(f"\n{'action':28} {'count':>6} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
    for name, row in report["actions"].items():
        print(f"{name:28} {row['count']:6d} {row['p50_s']:7.2f} {row['p95_s']:7.2f} {row['max_s']:7.2f}")
    errors = report["errors"]
    print(f"\nerrors: {errors['count']}" + "".join(f"\n  {line}" for line in errors["first"]))
    first = report["first_model_load_s"]
    print(f"first model load (the first Classify, from its rerun): {first:.1f} s" if first else
          "first model load: no Classify finished")
    memory = report["memory"]
    for key, label in (("server_peak_mb", "server peak RSS"),
                       ("workers_peak_mb", "workers (the server's children) peak RSS"),
                       ("together_peak_mb", "server + workers peak RSS (sampled together)"),
                       ("server_after_first_classify_mb", "server RSS after the first Classify"),
                       ("server_after_ttl_mb", "server RSS after close + TTL + 30 s"),
                       ("difference_mb", "difference"),
                       ("server_after_first_visit_mb", "(server RSS after the first whole visit)")):
        value = memory.get(key)
        print(f"{label:48} " + (f"{value:8.0f} MB" if value is not None else "       -"))
    training = report["training"]
    print(f"training: {training['runs_finished']} runs finished; first worker after "
          f"{training['first_worker_after_s']} s; samples with a worker alive {training['with_worker']} of "
          f"{training['samples']}, longest gap {training['longest_gap_s']} s; longest step between samples "
          f"{training['longest_sample_step_s']} s; from one run's end to the next one's start (status.json): "
          f"{training['handovers_s']} s" + (f"; the queue ran out {training['queue_ran_out_after_s']} s in (gaps "
                                            "measured until then)" if training.get("queue_ran_out_after_s") else ""))
    print(f"server log 'tl cache' lines: {report['cache_lines'] or 'none'}")
    own = report["load_generator"]
    print(f"photos classified (both heads drawn): {report['photos_classified']}, "
          f"{report['photos_per_minute']} a minute")
    print(f"load generator (not in the figures above): {own['cpu_s']:.1f} CPU s, peak RSS {own['peak_rss_mb']:.0f} MB")
    print()
    for check in report["checks"]:
        print(f"{'PASS' if check['passed'] else 'FAIL'}  {check['what']}: {check['value']}")


def checks(report: dict, budget: float) -> list:
    actions, memory, training = report["actions"], report["memory"], report["training"]
    warm = actions.get("classify")
    gradcam = actions.get("grad-cam on")
    settle = memory.get("difference_mb")
    return [
        {"what": "no session errors", "value": report["errors"]["count"], "passed": report["errors"]["count"] == 0},
        {"what": f"warm Classify p95 < {WARM_P95_SECONDS:g} s", "value": warm and round(warm["p95_s"], 2),
         "passed": bool(warm) and warm["p95_s"] < WARM_P95_SECONDS},
        {"what": f"Grad-CAM on p95 <= {GRADCAM_P95_SECONDS:g} s (every map of the visit's photos drawn)",
         "value": gradcam and round(gradcam["p95_s"], 2),
         "passed": bool(gradcam) and gradcam["p95_s"] <= GRADCAM_P95_SECONDS},
        {"what": f"peak server + workers RSS < {budget:,.0f} MB", "value": round(memory["together_peak_mb"]),
         "passed": memory["together_peak_mb"] < budget},
        {"what": f"server RSS after close + TTL + 30 s within {SETTLE_MB} MB of after the first Classify",
         "value": settle if settle is None else round(settle), "passed": settle is not None and settle <= SETTLE_MB},
        {"what": f"a training worker alive all along (from {FIRST_WORKER_SECONDS:g} s in, no gap over "
                 f"{MAX_WORKER_GAP_SECONDS:g} s)",
         "value": f"first after {training['first_worker_after_s']} s, {training['with_worker']}/"
                  f"{training['samples']} samples, longest gap {training['longest_gap_s']} s",
         "passed": training["first_worker_after_s"] is not None
                   and training["first_worker_after_s"] <= FIRST_WORKER_SECONDS
                   and training["longest_gap_s"] <= MAX_WORKER_GAP_SECONDS},
    ]


# -- main ---------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10, help=f"concurrent sessions (1-{MAX_SESSIONS})")
    parser.add_argument("--minutes", type=float, default=3, help=f"how long they run (at most {MAX_MINUTES})")
    parser.add_argument("--budget-mb", type=float, default=None,
                        help="TL_MEMORY_BUDGET_MB for the app, and the target for the peak (default target 2500)")
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds a student waits between actions")
    parser.add_argument("--out", type=Path, help="write the report as JSON here (and the server's log beside it)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 sessions, 30 s, TTL 5 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.minutes = 2, 0.5
    if not 1 <= args.sessions <= MAX_SESSIONS or not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--sessions must be 1-{MAX_SESSIONS} and --minutes above 0 and at most {MAX_MINUTES}")
    ttl = session_ttl(args.quick)
    budget = args.budget_mb or 2500.0
    seconds = args.minutes * 60

    work = Path(tempfile.mkdtemp(prefix="tl-load-"))
    root, log = work / "runs", work / "server.log"
    root.mkdir()
    try:
        print(f"Preparing {root} (a finished Lite0 run, a queue of training runs, a made dataset)...", flush=True)
        queued = math.ceil(seconds / 12) + 2  # more than the test can train (a run takes 20 s or more here)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            setup = pool.submit(_prepare, str(root), queued, args.budget_mb).result()
        process, url = start_server(root, log, ttl, args.budget_mb)
        print(f"Server {url} (pid {process.pid}); {args.sessions} sessions for {seconds:.0f} s...", flush=True)
        sampler = Sampler(process.pid)
        sampler.start()
        try:
            report = _drive(args, url, root, setup, process, sampler, seconds, ttl, log)
        finally:
            sampler.stop()
            stop_server(process, sampler.workers)
        report["checks"] = checks(report, budget)
        print_report(report)
        if args.out:
            args.out.write_text(json.dumps(_rounded(report), indent=2) + "\n")
            shutil.copy(log, args.out.with_suffix(".server.log"))
            print(f"\nWrote {args.out} and {args.out.with_suffix('.server.log')}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _drive(args, url, root, setup, process, sampler, seconds, ttl, log) -> dict:
    with Session(url, timeout=240) as first:  # the job manager adopts the queue: the worker starts
        first.open("train")
    record = Recorder()
    own_start = resource.getrusage(resource.RUSAGE_SELF)
    start = time.time()
    end = start + seconds
    stagger = min(1.0, 15.0 / args.sessions)
    threads = []
    for index in range(args.sessions):
        thread = threading.Thread(target=visitor, name=f"session-{index}", daemon=True,
                                  args=(index, url, root, setup, end, args.think, process.pid, record))
        thread.start()
        threads.append(thread)
        time.sleep(stagger)
    last_word = time.time()
    while any(thread.is_alive() for thread in threads) and time.time() < end + 300:
        time.sleep(1)
        if time.time() - last_word >= 30 and sampler.samples:
            last_word = time.time()
            _, server_mb, children_mb, workers, _ = sampler.samples[-1]
            print(f"  {last_word - start:4.0f} s: {len(record.actions)} actions, {len(record.errors)} errors; server "
                  f"{server_mb:,.0f} MB, workers {children_mb:,.0f} MB ({workers} training)", flush=True)
    closed = time.time()
    own_end = resource.getrusage(resource.RUSAGE_SELF)
    print(f"Sessions closed; waiting the TTL ({ttl} s) + 30 s...", flush=True)
    time.sleep(ttl + 30)
    after_ttl = rss_mb(process.pid)
    active = metrics(url).get("active_sessions")

    rows, first_load = summarise(record)
    during = [s for s in sampler.samples if start <= s[0] <= closed]
    first = record.first_classify
    finished = sum(1 for run_id in setup["queued"]
                   if json.loads((root / run_id / "status.json").read_text()).get("status") == "done")
    ends = [json.loads((root / run_id / "status.json").read_text()).get("finished") for run_id in setup["queued"]]
    dry = None if None in ends else max(ends)  # the queue ran out before the sessions closed: gaps until then
    gaps = worker_gaps(sampler.samples, start, min(closed, dry or closed))
    gaps["handovers_s"] = handovers(root, setup["queued"])
    gaps["queue_ran_out_after_s"] = None if dry is None else round(dry - start, 1)
    return {
        "machine": machine(),
        "config": {"sessions": args.sessions, "minutes": args.minutes, "budget_mb": args.budget_mb,
                   "think_s": args.think, "disconnected_session_ttl_s": ttl, "queued_runs": len(setup["queued"])},
        "actions": dict(sorted(rows.items())),
        "errors": {"count": len(record.errors),
                   "first": [f"session {who}, {what}: {message}" for who, what, message in record.errors[:5]]},
        "first_model_load_s": first_load,
        "photos_classified": record.photos,
        "photos_per_minute": round(record.photos / (seconds / 60), 1),
        "memory": {
            "server_peak_mb": max((s[1] for s in during), default=0),
            "workers_peak_mb": max((s[2] for s in during), default=0),
            "together_peak_mb": max((s[1] + s[2] for s in during), default=0),
            "server_after_first_classify_mb": first[1] if first else None,
            "server_after_ttl_mb": after_ttl,
            "difference_mb": after_ttl - first[1] if first else None,
            "server_after_first_visit_mb": record.first_visit[1] if record.first_visit else None,
            "active_sessions_after_ttl": active,
        },
        "training": {"runs_finished": finished, **gaps},
        "cache_lines": cache_lines(log),
        "load_generator": {"cpu_s": (own_end.ru_utime + own_end.ru_stime) - (own_start.ru_utime + own_start.ru_stime),
                           "peak_rss_mb": max((s[4] for s in sampler.samples), default=0)},
    }


if __name__ == "__main__":
    sys.exit(main())
