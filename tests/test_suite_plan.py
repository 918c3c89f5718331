"""The suite's own plan (``tests/suite_plan.py``): which tests share a worker, in what order the
units start, and the canaries that fail when the plan is not in force."""

import re
import subprocess
import sys

import pytest

import suite_plan
from conftest import REPO

TESTS = REPO / "tests"
SERVER_CALLS = re.compile(r"(?<![\w.])serve\(|\bstart_server\(")  # not a SavedModel's .serve(


def test_every_module_that_starts_a_server_is_in_the_browser_group():
    starting = {path.stem for path in TESTS.glob("test_*.py") if SERVER_CALLS.search(path.read_text())}
    assert starting, "no test starts a server: the pattern is out of date"
    assert starting <= set(suite_plan.GROUPS["browser"]), starting - set(suite_plan.GROUPS["browser"])
    assert all((TESTS / f"{module}.py").is_file() for module in suite_plan.MODULE_GROUP)


def test_units_are_modules_or_their_group():
    assert suite_plan.unit_of("tests/test_config.py::test_x[a::b]") == "test_config"
    assert suite_plan.unit_of("tests/test_browser_data.py::test_y") == "browser"
    assert suite_plan.unit_of("tests/test_server_sessions.py::test_z") == "browser"


def test_the_browser_group_starts_first_then_the_longest_modules():
    units = {"test_small": ["a"] * 3, "browser": ["b"], "test_training": ["c"] * 2, "test_many": ["d"] * 100}
    assert suite_plan.order(units) == ["browser", "test_training", "test_many", "test_small"]


def test_a_unit_claimed_by_another_worker_fails_the_second(tmp_path, monkeypatch):
    monkeypatch.setattr(suite_plan, "SHARED", tmp_path)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    suite_plan.claim_unit("test_a")
    suite_plan.claim_unit("test_a")  # the same worker again: fine
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    with pytest.raises(AssertionError, match="'test_a' runs on two workers \\(gw0 and gw1\\)"):
        suite_plan.claim_unit("test_a")


def test_a_second_server_at_once_fails_at_once_and_one_after_another_is_fine(tmp_path, monkeypatch):
    monkeypatch.setattr(suite_plan, "SHARED", tmp_path)
    with suite_plan.one_server_at_a_time("first"):
        # Another process, as the other worker would be.
        code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import suite_plan, pathlib; "
                f"suite_plan.SHARED = pathlib.Path({str(tmp_path)!r})\n"
                "with suite_plan.one_server_at_a_time('second'): pass")
        second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "Two browser servers at once: second" in second.stderr, second.stderr
        assert "while first on" in second.stderr
    with suite_plan.one_server_at_a_time("third"):
        pass


def test_the_seconds_table_reads_a_junit_report(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text('<testsuites><testsuite><testcase classname="tests.test_a" name="x" time="2.5"/>'
                      '<testcase classname="tests.test_a" name="y" time="1"/>'
                      '<testcase classname="tests.test_b" name="z" time="9"/></testsuite></testsuites>')
    assert suite_plan.seconds_from_junit(report) == {"test_b": 9.0, "test_a": 3.5}
