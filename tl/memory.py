"""One memory budget for the whole app: the server, its caches and its background processes.

With ``$TL_MEMORY_BUDGET_MB`` set (a Streamlit Community Cloud container holds 690 MB to
2.7 GB), :func:`need` is asked before anything large is loaded or started in the app's
server: a run's model for Classify, a training worker, a data check. It counts what is in
use now:

- the server process's resident memory (its caches included);
- each of its child processes (training workers, data checks): the larger of its resident
  memory and what it was expected to reach (:func:`reserve`, from :func:`tl.run_cost.estimate`),
  since a worker that has just started is far below its peak.

When the new load does not fit, the server's caches are released first (:func:`on_pressure`
registers how: the app drops its cached models and datasets) and the memory given back to
the system (``malloc_trim``); when it still does not fit, :class:`tl.run_cost.BudgetError`
says what is using the memory and when to retry. Runs started with ``python -m tl train`` on
the same machine are not children of the server and are outside this count.

:class:`Cache` is the server's store of large shared things (models, datasets): a
least-recently-used map bounded in megabytes and entries, loading each key once however many
sessions ask at the same moment, and saying on stderr what it loads and evicts
(``tl cache <name>: load <key> (<N> MB); holding <n> entries, <M> MB of <L> MB``).

No TensorFlow and no streamlit here: Linux's ``/proc`` gives the figures (elsewhere the
server's own peak from :mod:`resource`, and no child processes).
"""

import ctypes
import os
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from tl.run_cost import BUDGET_ENV, BudgetError, budget_mb

MB = 2 ** 20
IDLE_SECONDS = 60.0  # a cached entry unused this long may be dropped for another load
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_lock = threading.Lock()
_reserved = {}  # pid -> (MB it may reach, what it is, when it is expected to end or None)
_releasers = []  # callables that drop server caches
_caches = []  # every Cache made in this process, for floor_mb


# -- what is in use ---------------------------------------------------------------------

def rss_mb(pid: int | None = None) -> float:
    """Resident memory of ``pid`` (default: this process) in MB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as stat:
            return int(stat.read().split()[1]) * _PAGE / MB
    except (OSError, ValueError, IndexError):
        if pid is None or pid == os.getpid():
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the peak: errs high
        return 0.0


def descendants(pid: int | None = None) -> list:
    """Ids of every process below ``pid`` (default: this one), children first."""
    pid = pid or os.getpid()
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not readable
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def reserve(pid: int, mb: float, what: str, ends_at: float | None = None) -> None:
    """Count ``pid`` (a child the server started) as using at least ``mb`` while it lives:
    its expected peak. ``what`` names it in a refusal ("training run 2026...-ab12");
    ``ends_at`` (a time) lets a refusal say when to retry."""
    with _lock:
        _reserved[pid] = (float(mb), what, ends_at)


def unreserve(pid: int) -> None:
    with _lock:
        _reserved.pop(pid, None)


def in_use() -> dict:
    """MB in use now: ``{"server": ..., "children": {pid: (mb, what, ends_at)}, "total": ...}``.
    A child counts as the larger of its resident memory and its reservation."""
    with _lock:
        reserved = dict(_reserved)
    children = {}
    # A worker an earlier server started (adopted by the job manager) is not a descendant.
    for pid in set(descendants()) | set(reserved):
        mb, what, ends = reserved.get(pid, (0.0, "a background process", None))
        rss = rss_mb(pid)
        if rss == 0.0:  # exited (a zombie not yet reaped holds no memory): its slot, if any, is free
            if pid in reserved:
                unreserve(pid)
            continue
        children[pid] = (max(mb, rss), what, ends)
    server = rss_mb()
    return {"server": server, "children": children, "total": server + sum(c[0] for c in children.values())}


def floor_mb() -> float:
    """The server's memory less what its caches hold (they are dropped to make room)."""
    with _lock:
        caches = list(_caches)
    return max(0.0, rss_mb() - sum(cache.held_mb for cache in caches))


# -- making room ------------------------------------------------------------------------

def on_pressure(release, order: int = 0) -> None:
    """Register ``release()``, called to drop a server cache when a load would not fit;
    lower ``order`` is dropped first."""
    with _lock:
        if all(found is not release for _, found in _releasers):
            _releasers.append((order, release))
            _releasers.sort(key=lambda pair: pair[0])


def release_caches(fits=None) -> None:
    """Drop the registered caches, lowest order first, until ``fits()`` (default: all),
    and hand the freed memory back to the system."""
    with _lock:
        releasers = [release for _, release in _releasers]
    for release in releasers:
        release()
        trim()
        if fits is not None and fits():
            return


def settle() -> None:
    """After loading something large and long-lived (TensorFlow, a model): collect once,
    then move every object that survives out of the garbage collector's sight
    (``gc.freeze``). With TensorFlow loaded a full collection walks millions of objects
    (about half a second here, holding the interpreter), and Streamlit collects after every
    script run of every session; frozen, those objects cost it nothing. :func:`trim`
    unfreezes them again, so an evicted model's memory is still freed."""
    import gc

    gc.collect()
    gc.freeze()


def trim(collect: bool = True) -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``), so that
    resident memory falls once caches are dropped; with ``collect``, first collect
    everything, frozen objects too (:func:`settle`), and freeze what is left again."""
    import gc

    if collect:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


M_ARENA_MAX = -8  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024


def serve_quietly(arenas: int = 2, trim_seconds: float = 15.0) -> bool:
    """For a server of many sessions (each script run is a thread of its own): cap glibc's
    malloc arenas at ``arenas`` (by default it makes up to eight per core, one per busy
    thread, and freed memory scattered over them is rarely handed back); serve every block
    of 1 MB or more (a tensor) from its own mapping, returned to the system as soon as it is
    freed (glibc otherwise raises that threshold to 32 MB as it goes, and such tensors then
    stay in the heap); and hand free heap pages back every ``trim_seconds`` from a background
    thread, so that the server's resident memory falls again once sessions end. Returns
    False where glibc is not there (nothing done)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, int(arenas))
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        return False

    def trim_now_and_then():
        while True:
            time.sleep(trim_seconds)
            libc.malloc_trim(0)  # a foreign call: the interpreter goes on meanwhile

    threading.Thread(target=trim_now_and_then, name="tl-malloc-trim", daemon=True).start()
    return True


def need(mb: float, what: str, budget: float | None = None) -> None:
    """Make sure ``mb`` more fits the app's budget, releasing the server's caches if that
    helps; else raise :class:`BudgetError` with one sentence (what uses the memory, when to
    retry). No budget set: always fits.

    Args:
        what: the load, as the sentence's subject ("Loading this run's model").
    """
    budget = budget_mb() if budget is None else budget
    if budget is None:
        return
    used = in_use()
    if used["total"] + mb <= budget:
        return
    release_caches(fits=lambda: in_use()["total"] + mb <= budget)
    used = in_use()
    if used["total"] + mb <= budget:
        return
    raise BudgetError(f"{what} needs about {mb:,.0f} MB, but the app is using {used['total']:,.0f} of its "
                      f"{budget:,.0f} MB ({BUDGET_ENV}) right now{_who(used)}; {_when(used)}")


def _who(used: dict) -> str:
    busy = sorted(used["children"].values(), key=lambda c: -c[0])
    if not busy:
        return ""
    mb, what, _ = busy[0]
    return f", {mb:,.0f} MB of it for {what}"


def _when(used: dict) -> str:
    ends = [c[2] for c in used["children"].values() if c[2]]
    if ends:
        minutes = max(1, round((min(ends) - time.time()) / 60))
        return f"try again in about {minutes} min, when it has finished."
    if used["children"]:
        return "try again when it has finished (see the runs list on the Train page)."
    return "try again in a minute, or ask whoever runs the app for a larger budget."


# -- the server's caches --------------------------------------------------------------------

class Cache:
    """A thread-safe least-recently-used cache bounded in MB and in entries.

    ``get(key, make, size_mb)`` returns the value for ``key``, calling ``make()`` once
    however many threads ask for the same key at once (the others wait for it). A new value
    of ``size_mb`` first makes room: least recently used entries are evicted until it fits
    (an entry larger than the whole limit is still held, alone). ``need`` (default
    :func:`need`) is asked for the value's size before it is made, so a load the app's
    budget cannot take is refused instead of killing the container.

    Args:
        name: for the stderr lines ("models", "data").
        limit_mb: the most the values may hold together (their estimates).
        max_entries: the most values held.
        heavy: the values are large object graphs with reference cycles (Keras models):
            :func:`settle` after each load, and a full collection (:func:`trim`) after an
            eviction so that their memory is freed. Each costs about half a second of the
            interpreter with TensorFlow loaded, so plain values (datasets) skip both.
        order: when a load elsewhere needs room, caches are dropped lowest ``order`` first
            (datasets, cheap to read again, before models).
    """

    def __init__(self, name: str, limit_mb: float, max_entries: int, need=need, log=True, heavy=False, order=0):
        self.name = name
        self.heavy = heavy
        self.limit_mb = float(limit_mb)
        self.max_entries = int(max_entries)
        self._need = need
        self._log = log
        self._lock = threading.Lock()
        self._items = OrderedDict()  # key -> (value, MB)
        self._loading = {}  # key -> threading.Event, set when the load ends
        self._names = {}  # key -> its label in the stderr lines
        self._used = {}  # key -> when it was last asked for
        self.loads = 0
        self.evictions = 0
        on_pressure(self.release_idle, order)
        with _lock:
            _caches.append(self)

    def get(self, key, make, size_mb: float, what: str = "Loading this", label: str | None = None):
        """``label``: how the stderr lines name the entry (default: the key)."""
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    self._used[key] = time.time()
                    return self._items[key][0]
                waiting = self._loading.get(key)
                if waiting is None:
                    self._loading[key] = threading.Event()
                    break
            waiting.wait()  # another session loads it: use theirs (or retry if it failed)
        try:
            self._make_room(size_mb)
            if self._need is not None:
                self._need(size_mb, what)
            value = make()
            if self.heavy:
                settle()
            with self._lock:
                self._items[key] = (value, float(size_mb))
                self._used[key] = time.time()
                self.loads += 1
                held = self._held()
            self._names[key] = label or str(key)
            self._say(f"load {self._names[key]} ({size_mb:,.0f} MB); {held}")
            return value
        finally:
            with self._lock:
                self._loading.pop(key).set()

    def _make_room(self, size_mb: float) -> None:
        def over() -> list:
            keys, total = list(self._items), sum(mb for _, mb in self._items.values())
            doomed = []
            while keys and (len(keys) >= self.max_entries or total + size_mb > self.limit_mb):
                key = keys.pop(0)  # least recently used first
                total -= self._items[key][1]
                doomed.append(key)
            return doomed

        self._evict(over)

    def release_idle(self, seconds: float | None = None) -> None:
        """Evict the entries nobody has used for ``seconds`` (default ``IDLE_SECONDS``): what
        a load elsewhere may take. An entry in use is kept: sessions hold it anyway, so
        evicting it would free nothing and cost a reload."""
        cutoff = time.time() - (IDLE_SECONDS if seconds is None else seconds)
        self._evict(lambda: [key for key in self._items if self._used.get(key, 0) < cutoff])

    def clear(self) -> None:
        self._evict(lambda: list(self._items))

    def pop(self, key) -> None:
        self._evict(lambda: [key] if key in self._items else [])

    def _evict(self, choose) -> None:
        """Drop the keys ``choose()`` picks (called with the lock held), hand their memory
        back (:func:`trim`) and say so, one line each."""
        with self._lock:
            evicted = choose()
            for key in evicted:
                del self._items[key]
                self._used.pop(key, None)
            self.evictions += len(evicted)
            held = self._held()
        if evicted:
            trim(collect=self.heavy)
        for key in evicted:
            self._say(f"evict {self._names.pop(key, key)}; {held}")

    def peek(self, key, default=None):
        """The value held for ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            self._used[key] = time.time()
            return self._items[key][0]

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def held_mb(self) -> float:
        with self._lock:
            return sum(mb for _, mb in self._items.values())

    def _held(self) -> str:
        # Called with the lock held.
        total = sum(mb for _, mb in self._items.values())
        return f"holding {len(self._items)} entries, {total:,.0f} MB of {self.limit_mb:,.0f} MB"

    def _say(self, text: str) -> None:
        if self._log:
            print(f"tl cache {self.name}: {text}", file=sys.stderr, flush=True)


def cache_limit_mb(share: float, default_mb: float, budget: float | None = None) -> float:
    """A cache's limit: ``share`` of the app's budget when one is set, else ``default_mb``
    (also when the budget is not a number: the pages that load things say so)."""
    if budget is None:
        try:
            budget = budget_mb()
        except BudgetError:
            budget = None
    return budget * share if budget else default_mb
