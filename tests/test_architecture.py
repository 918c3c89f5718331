"""The shape of the code: imports inside tl/, ui/ and app_pages/ flow one way (no circles,
counting the imports inside functions too, module by module: ``from tl.data import made`` is an
edge to ``tl.data.made``), down the layer table in the README (no import runs up it), no file
is longer than ``MAX_LINES`` unless the README names it as one concern, tl/ never imports
streamlit, and the data package's public names stay where the app and the CLI import them."""

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

TL = REPO / "tl"
ROOTS = ("tl", "ui", "app_pages")
README = REPO / "README.md"
LAYERS_HEADING = "### Layers"
MAX_LINES = 500
LONG_FILES = "Long by design"  # the README line that names the files allowed past MAX_LINES


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict:
    """``{module name: path}`` of every module under ``ROOTS``."""
    return {module_name(path): path for root in ROOTS for path in (REPO / root).rglob("*.py")}


def imports_of(path: Path, modules) -> set:
    """Every project module that ``path`` imports, at any depth of the file. ``from pkg import
    name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
                found.update(next(([name] for name in prefixes if name in modules), []))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                inner = f"{node.module}.{alias.name}"
                if inner in modules:
                    found.add(inner)
                elif node.module in modules:
                    found.add(node.module)
    return found


def import_graph() -> dict:
    modules = project_modules()
    return {name: {dep for dep in imports_of(path, modules) if dep != name} for name, path in modules.items()}


def find_cycle(graph: dict):
    """One import circle as a list of modules, or ``None``."""
    state, stack = {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def test_no_import_cycles_in_tl_ui_and_app_pages():
    graph = import_graph()
    assert len(graph) > 50 and {"tl.data.registry", "ui.state", "app_pages.train"} <= set(graph)  # the walk found all three
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_from_a_package_import_a_module_is_an_edge_to_that_module(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("from tl.data import made, DATASETS\nimport tl.data.quota\n"
                      "def late():\n    from tl import runs\n")
    modules = project_modules()
    assert imports_of(source, modules) == {"tl.data.made", "tl.data", "tl.data.quota", "tl.runs"}


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_tl_never_imports_streamlit():
    for path in TL.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(name.split(".")[0] == "streamlit" for name in names), path


def test_every_data_module_says_what_it_owns_and_datasets_reexports_them():
    from tl import datasets
    from tl.data import core, folder, pipeline, public, registry, synthetic

    for module in (core, folder, pipeline, public, registry, synthetic):
        assert module.__doc__ and module.__doc__.strip()
    assert datasets.DATASETS is registry.DATASETS and datasets.DOWNLOADS is public.DOWNLOADS
    assert datasets.scan_folder_cached is folder.scan_folder_cached and datasets.load is registry.load


# -- the layer table ---------------------------------------------------------------------------

def layer_table(text: str) -> list:
    """The README's layer table, bottom first: a list of ``(layer name, [module patterns])``.
    A pattern is a path under ``tl/`` (``data/catalogue``), or under ``ui/`` or ``app_pages/``
    when it starts with them; one ending in ``/`` stands for every module of that package."""
    section = text.split(LAYERS_HEADING, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= set("-: "):
            continue
        if cells[0].lower() == "layer":
            continue
        rows.append((cells[0], re.findall(r"`([^`]+)`", cells[1])))
    return rows


def pattern_modules(pattern: str, modules) -> set:
    path = pattern if pattern.startswith(("ui/", "app_pages/")) else f"tl/{pattern}"
    name = path.rstrip("/").replace("/", ".")
    if pattern.endswith("/"):
        return {m for m in modules if m == name or m.startswith(name + ".")}
    return {name} & set(modules)


def layers_of(table, modules) -> dict:
    """module -> its row number in the table (0: the bottom layer)."""
    layer = {}
    for number, (_, patterns) in enumerate(table):
        for pattern in patterns:
            found = pattern_modules(pattern, modules)
            assert found, f"The README's layer table names `{pattern}`, which is no module"
            for module in found:
                assert module not in layer, f"{module} is in two layers of the README's table"
                layer[module] = number
    return layer


def upward_imports(graph: dict, layer: dict) -> list:
    """``(importer, imported)`` pairs where a module imports one of a higher layer."""
    return sorted((name, dep) for name, deps in graph.items() if name in layer
                  for dep in deps if dep in layer and layer[dep] > layer[name])


def faces_with_no_imports(graph: dict, modules) -> set:
    """Package ``__init__`` modules that import nothing of the project (a docstring only)."""
    return {name for name, path in modules.items() if path.name == "__init__.py" and not graph[name]}


def test_every_module_sits_in_one_layer_and_no_import_runs_up_the_table():
    modules = project_modules()
    graph = import_graph()
    table = layer_table(README.read_text())
    assert len(table) >= 6, table
    layer = layers_of(table, modules)
    unplaced = set(modules) - set(layer) - faces_with_no_imports(graph, modules)
    assert not unplaced, f"Modules missing from the README's layer table: {sorted(unplaced)}"
    upward = upward_imports(graph, layer)
    assert not upward, "Imports that run up the layer table: " + ", ".join(
        f"{a} ({table[layer[a]][0]}) -> {b} ({table[layer[b]][0]})" for a, b in upward)


def test_the_layer_check_sees_an_import_that_runs_up(tmp_path):
    table = layer_table(f"{LAYERS_HEADING}\n\n| layer | modules |\n|---|---|\n| where | `paths` |\n"
                        "| run record | `runs`, `data/made/` |\n\n## Next\n| x | `ui/state` |\n")
    assert table == [("where", ["paths"]), ("run record", ["runs", "data/made/"])]
    modules = {"tl.paths": None, "tl.runs": None, "tl.data.made": None, "tl.data.made.store": None, "ui.state": None}
    layer = layers_of(table, modules)
    assert layer == {"tl.paths": 0, "tl.runs": 1, "tl.data.made": 1, "tl.data.made.store": 1}
    assert upward_imports({"tl.paths": {"tl.runs"}, "tl.runs": {"tl.paths"}}, layer) == [("tl.paths", "tl.runs")]
    assert upward_imports({"tl.runs": {"tl.data.made.store"}}, layer) == []  # the same layer


# -- the size of a file ------------------------------------------------------------------------

def long_files_named(text: str) -> set:
    """The files the README's "Long by design" line names (paths from the repository root)."""
    line = next((line for line in text.splitlines() if line.startswith(LONG_FILES)), "")
    return set(re.findall(r"`([^`]+\.py)`", line))


def test_no_file_is_over_the_line_limit_unless_the_readme_names_it_as_one_concern():
    named = long_files_named(README.read_text())
    assert len(named) <= 2, f"The README names {len(named)} long files; at most two may be long: {sorted(named)}"
    lengths = {str(path.relative_to(REPO)): len(path.read_text().splitlines())
               for root in ROOTS for path in (REPO / root).rglob("*.py")}
    too_long = {path: n for path, n in lengths.items() if n > MAX_LINES and path not in named}
    assert not too_long, f"Over {MAX_LINES} lines: {too_long}; split it along its concerns"
    stale = {path for path in named if lengths.get(path, 0) <= MAX_LINES}
    assert not stale, f"The README names {sorted(stale)} as long, but they are not (or do not exist)"


def test_the_line_limit_reads_the_readme_line():
    text = "intro\nLong by design (one concern each): `tl/ingest.py` (uploads) and `tl/x.py`.\nmore `tl/y.py`\n"
    assert long_files_named(text) == {"tl/ingest.py", "tl/x.py"}


# -- one door per rule -------------------------------------------------------------------------

RULES = {  # what a rule looks like written out -> the one file allowed to write it
    "the data:NAME prefix": (r"""startswith\(\s*["']data:|removeprefix\(\s*["']data:|["']data:["']\s*\+|f["']data:\{|= ["']data:["']""",
                             "tl/data/catalogue.py"),
    "the control-character rule": (r"\\x00-\\x1f|\\x7f-\\x9f", "tl/text.py"),
    "text shown in a message": (r"\.isprintable\(\)", "tl/text.py"),
    "a made dataset in use (its refs)": (r"""["']refs["']\s*\)\s*\.glob|/ ["']refs["']\)\.glob""", "tl/data/quota.py"),
    "the live-refresh interval": (r"run_every\s*=\s*[0-9]", None),
    "the default dataset, backbone, strategy and head": (r"^DEFAULT_(DATASET|BACKBONE|STRATEGY|HEAD)\b", None),
    "a path helper re-exported": (r"from tl\.paths import .*noqa: F401", None),
}


def rule_writers(pattern: str) -> set:
    found = set()
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            if re.search(pattern, path.read_text(), re.M):
                found.add(str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_is_written_in_one_place(rule):
    pattern, home = RULES[rule]
    writers = rule_writers(pattern)
    assert writers == ({home} if home else set()), f"{rule} is written in {sorted(writers)}; keep it in {home or 'none'}"


def test_the_rule_finder_sees_a_second_copy(tmp_path, monkeypatch):
    (tmp_path / "tl").mkdir()
    (tmp_path / "tl" / "a.py").write_text('if name.startswith("data:"):\n    pass\n')
    (tmp_path / "tl" / "b.py").write_text('CONTROL = re.compile(r"[\\x00-\\x1f]")\n')
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    assert rule_writers(RULES["the data:NAME prefix"][0]) == {"tl/a.py"}
    assert rule_writers(RULES["the control-character rule"][0]) == {"tl/b.py"}
