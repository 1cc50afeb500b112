"""Package structure: no module of esd_gs imports, directly or through others, one that imports it back
(lazy imports inside functions included: a cycle there only waits for the call that closes it); each package
imports only the layers below it (docs/guide.md, "How it is built"); small modules, classes and functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "esd_gs"


def imports_of(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(parts + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path, name) if m in paths and m != name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_import_graph_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph()
    assert "esd_gs.commands.args" in graph["esd_gs.commands.batch"] and "esd_gs.errors" in graph["esd_gs.cli"]


def test_esd_gs_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


# package: the packages (and top-level modules) it may import; each layer sees only what is below it
ALLOWED = {
    "errors": set(),
    "core": {"errors"},
    "render": {"core", "errors"},
    "io": {"core", "errors", "render"},  # the mesh export renders depth
    "guidance": {"core", "errors", "render"},
    "synthetic": {"core", "errors", "guidance", "io", "render"},
    "config": {"core", "errors", "guidance", "synthetic"},
    "worlds": {"config", "core", "errors", "guidance", "io", "synthetic"},
    "metrics": {"core", "errors", "guidance", "io", "render"},
    "run": {"config", "core", "errors", "guidance", "io", "render", "worlds"},
    "commands": {"config", "core", "errors", "guidance", "io", "metrics", "render", "run", "synthetic", "worlds"},
    "cli": {"errors"},  # the commands are imported by name when one runs
}


def test_each_package_imports_only_the_layers_below_it():
    def package(module: str) -> str:
        return module.split(".")[1] if module != "esd_gs" else "esd_gs"

    graph = import_graph()
    seen = {package(m) for m in graph} - {"esd_gs", "models", "__main__"}
    assert seen <= set(ALLOWED), seen - set(ALLOWED)
    wrong = sorted((a, b) for a, deps in graph.items() for b in deps
                   if package(a) in ALLOWED and package(b) != package(a) and package(b) not in ALLOWED[package(a)])
    assert not wrong, wrong


def test_small_modules_classes_and_functions():
    """At most 8 modules at esd_gs's top (besides __init__ and __main__), no class over 120 lines and no
    function over 60: a reader takes each in at once."""
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= 8, top
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            limit = 120 if isinstance(node, ast.ClassDef) else 60 if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_long.append(f"{path.relative_to(PACKAGE)}:{node.name} {node.end_lineno - node.lineno + 1}")
    assert not too_long, too_long
