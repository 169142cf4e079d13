"""The packages' shape: imports point one way (no circle, lazy and type-only imports included),
search/ keeps at most 10 modules at its top, no module is over 400 lines, local disk vs object
storage is decided in search/storage alone, and trial/ imports nothing of the driver."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("space_defs", "trainer", "search")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every module of ours that ``name`` imports, anywhere in it (inside functions and
    ``if TYPE_CHECKING:`` too): ``from .x import y`` counts as x.y when that is a module."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[:len(package) - node.level + 1], node.module or ""]
                            if node.level else [node.module]).strip(".")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def test_the_checker_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "search.storage.base" in GRAPH["search.storage"]  # relative imports are resolved


def test_no_import_circle_in_the_packages():
    assert _circles(GRAPH) == []


def test_dependencies_point_one_way_between_packages():
    for name, imported in GRAPH.items():
        for target in imported:
            a, b = name.split(".")[0], target.split(".")[0]
            assert PACKAGES.index(b) <= PACKAGES.index(a), f"{name} imports {target}"


def test_search_keeps_at_most_ten_modules_at_its_top():
    top = sorted(p.stem for p in (ROOT / "search").glob("*.py") if p.stem != "__init__")
    assert len(top) <= 10, top


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_400_lines(name):
    assert len(MODULES[name].read_text(encoding="utf-8").splitlines()) <= 400


def test_local_disk_or_object_storage_is_decided_in_search_storage_alone():
    for name, path in MODULES.items():
        if name.startswith("search.") and not name.startswith("search.storage"):
            assert "is_local" not in path.read_text(encoding="utf-8"), name


def test_a_trial_imports_nothing_of_the_driver():
    """search.trial runs inside Tune trials: it may use the spec, the schema and the storage,
    never the driver's tuner, recorder, cluster or sweep files."""
    allowed = ("search.trial", "search.spec", "search.db.schema", "search.storage",
               "search.internals")  # Ray's private names, a leaf: imports nothing of ours
    for name in (n for n in MODULES if n.startswith("search.trial")):
        for target in (t for t in GRAPH[name] if t.startswith("search")):
            assert target.startswith(allowed), f"{name} imports {target}"
