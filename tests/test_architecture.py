"""The shape of the code: imports inside tl/ flow one way (no circles, counting the imports
inside functions too), tl/ never imports streamlit, and the data package's public names
stay where the app and the CLI import them."""

import ast
from pathlib import Path

from conftest import REPO

TL = REPO / "tl"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tl_imports(path: Path) -> set:
    """Every tl module that ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tl.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tl":
                found |= {f"tl.{alias.name}" for alias in node.names}
            elif node.module.startswith("tl."):
                found.add(node.module)
    return found


def import_graph() -> dict:
    graph = {module_name(path): tl_imports(path) for path in TL.rglob("*.py")}
    return {name: {dep for dep in deps if dep in graph and dep != name} for name, deps in graph.items()}


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


def test_tl_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30 and "tl.data.registry" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


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
