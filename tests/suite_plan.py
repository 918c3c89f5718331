"""How the suite is spread over pytest-xdist's workers, and the canaries that say when it is not.

A *unit* is what one worker runs from its first test to its last: a named group of modules
(``GROUPS``) or else one module. A unit never splits, so a module's ``scope="module"``
fixtures run once, and the browser group's servers run one after another.

``conftest.pytest_xdist_make_scheduler`` hands the units out longest first: the browser group
(the longest chain, so it must not start late), then every other module by its measured
seconds (``SECONDS``; a module not in the table by its number of tests). It reads a node id
only up to its first ``::`` (the file), so it depends on no ``xdist_group`` mark and no
node-id suffix (with pytest 9.2 and pytest-xdist 3.8 those marks are silently ignored:
pytest-xdist issue 1386).

The canaries: a unit that reaches a second worker fails there (:func:`claim_unit`), and a
second browser server started while one runs fails to start (:func:`one_server_at_a_time`).
With the scheduler hook switched off (``TL_TEST_SCHEDULER=xdist``) both fire.

``python tests/suite_plan.py test-output/junit.xml`` prints a fresh ``SECONDS`` table from a
full run's junit report.
"""

import contextlib
import fcntl
import os
import sys
from pathlib import Path

# Modules that share a process-wide resource: every streamlit server and chromium of the suite
# (one at a time on a 2-core machine beside the other worker's training).
GROUPS = {
    "browser": ("test_e2e_browser", "test_browser_newcomer", "test_browser_data", "test_browser_check",
                "test_browser_owners", "test_server_sessions", "test_browser_export_web"),
}
MODULE_GROUP = {module: group for group, modules in GROUPS.items() for module in modules}

# Seconds per module in a full run (junit, 2-core AMD EPYC with AVX-512, 2026-12-06). They only
# order the work: a stale figure costs balance at the end of the run, never a wrong result.
SECONDS = {
    "test_training": 116, "test_predict": 67, "test_hostile_inputs": 55, "test_convergence": 54, "test_app_classify": 53,
    "test_jobs": 46, "test_app_compare": 31, "test_distributed": 30, "test_cli_data": 28, "test_lite_run": 27,
    "test_app_train": 27, "test_export": 27, "test_app_teach": 25, "test_backbones": 24, "test_trust": 23,
    "test_memory": 22, "test_efficientnet_lite": 22, "test_cli": 20, "test_app_batch": 20, "test_engine": 19,
    "test_check": 14, "test_hostile_made": 13, "test_variants": 12, "test_cli_quiet": 12, "test_batch": 11, "test_sweep": 11,
}
SECONDS_PER_TEST = 0.3  # a module not in the table


def module_of(nodeid: str) -> str:
    """``tests/test_x.py::test_y[z]`` -> ``test_x``."""
    return Path(nodeid.split("::", 1)[0]).stem


def unit_of(nodeid: str) -> str:
    """The unit a test belongs to: its module's group, else its module."""
    module = module_of(nodeid)
    return MODULE_GROUP.get(module, module)


def order(units: dict) -> list:
    """Unit names, longest first: the groups, then by measured seconds or test count.

    Args:
        units: ``{unit: [node ids]}``.
    """
    def cost(unit):
        if unit in GROUPS:
            return float("inf")
        return SECONDS.get(unit, SECONDS_PER_TEST * len(units[unit]))

    return sorted(units, key=cost, reverse=True)


def make_scheduler(config, log):
    """A pytest-xdist scheduler that hands out :func:`unit_of` units in :func:`order`."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return unit_of(nodeid)

        def schedule(self):
            if self.collection is None and self.collection_is_completed \
                    and self._check_nodes_have_same_collection():
                self.collection = list(next(iter(self.registered_collections.values())))
                units = {}
                for nodeid in self.collection:
                    units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
                for unit in order(units):
                    self.workqueue[unit] = units[unit]
                # Two rounds, as xdist's own first distribution: each worker starts with a unit,
                # and one whose unit has two tests or fewer takes a second.
                for _ in range(2):
                    for node in self.nodes:
                        self._reschedule(node)
                return
            super().schedule()

    return UnitScheduling(config, log)


SHARED = None  # shared_dir(), set by conftest's session fixture


def shared_dir(tmp_path_factory) -> Path:
    """A folder every worker of this pytest session sees (the parent of each worker's base
    temp under xdist, the base temp itself without it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def claim_unit(unit: str) -> None:
    """Record that this worker runs ``unit``; fail if another worker of this session did."""
    folder = SHARED / "units"
    folder.mkdir(exist_ok=True)
    path = folder / unit
    try:
        with open(path, "x") as out:
            out.write(worker())
        return
    except FileExistsError:
        pass
    owner = path.read_text()
    if owner and owner != worker():
        raise AssertionError(f"Unit {unit!r} runs on two workers ({owner} and {worker()}): the suite's "
                             "scheduler (tests/suite_plan.py) is not in force.")


@contextlib.contextmanager
def one_server_at_a_time(what: str):
    """Hold the session's browser-server lock while a server runs; fail at once if another
    worker holds it (two servers beside each other's training is what the groups prevent)."""
    with open(SHARED / "browser-server.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise AssertionError(f"Two browser servers at once: {what} on {worker()} while "
                                 f"{lock.read().strip() or 'another'} runs; the browser modules must share one "
                                 "unit (tests/suite_plan.py).") from None
        lock.truncate(0)
        lock.write(f"{what} on {worker()}")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)


def seconds_from_junit(path) -> dict:
    """``{module: seconds}`` summed over a junit report's test cases, largest first."""
    import xml.etree.ElementTree as ET

    totals = {}
    for case in ET.parse(path).iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        totals[module] = totals.get(module, 0.0) + float(case.get("time") or 0)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


if __name__ == "__main__":
    found = seconds_from_junit(sys.argv[1])
    print({module: round(seconds) for module, seconds in found.items()
           if module not in MODULE_GROUP and seconds >= 10})
