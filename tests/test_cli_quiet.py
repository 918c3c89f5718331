"""stderr of ``python -m tl``: the program's own lines only, unless ``--verbose``."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY

# What TensorFlow and its native libraries print on their own (absl's notice, the oneDNN and
# CPU-feature lines, CUDA's factory registrations on a GPU machine).
FOREIGN = ("absl::InitializeLog", "WARNING: All log messages", "oneDNN", "cuda", "cpu_feature_guard")

# Writes as other libraries make them, next to one of the project's, in a bare interpreter
# (pytest's own capture would swallow the warning before it reaches stderr).
ATTRIBUTION = r"""
import os, sys
from tl.cli.stderr import own_lines_on_stderr

def write_as(module, code):
    exec(code, {"__name__": module})

for quiet in (True, False):
    with own_lines_on_stderr(quiet):
        write_as("tl.example", "import sys; print('ours', file=sys.stderr)")
        write_as("somelib", "import logging, sys, warnings; print('their print', file=sys.stderr); "
                            "warnings.warn('their warning'); logging.getLogger('somelib').warning('their log')")
        os.write(2, b"their native line\n")
    print("--", file=sys.stderr)
"""


def _environment():
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"  # TensorFlow then always prints its oneDNN notice, on any CPU
    return env


def _train(runs_dir, *extra):
    flags = [part for name, value in TINY.items() for part in ("--" + name.replace("_", "-"), str(value))]
    return subprocess.Popen([sys.executable, "-m", "tl", "train", *flags, "--runs-dir", str(runs_dir), "--json",
                             *extra], cwd=REPO, env=_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_real_train_shows_only_its_own_lines_and_verbose_shows_tensorflows(tmp_path):
    quiet, verbose = _train(tmp_path / "quiet"), _train(tmp_path / "verbose", "--verbose")
    quiet_err = quiet.communicate(timeout=300)[1]
    verbose_err = verbose.communicate(timeout=300)[1]
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet_err + verbose_err
    assert "Run " in quiet_err and "Done: test accuracy" in quiet_err  # --json's progress still comes
    assert [marker for marker in FOREIGN if marker in quiet_err] == [], quiet_err
    assert "oneDNN custom operations" in verbose_err and "Done: test accuracy" in verbose_err, verbose_err


def test_python_writes_pass_only_from_the_project_and_native_writes_are_dropped():
    result = subprocess.run([sys.executable, "-c", ATTRIBUTION], cwd=REPO, env=_environment(),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    quiet, verbose, _ = result.stderr.split("--\n")
    assert quiet == "ours\n"
    for line in ("ours", "their print", "their warning", "their log", "their native line"):
        assert line in verbose, verbose
