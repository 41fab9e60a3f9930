"""The imports of src/podium point one way: transport -> domain -> ground, no cycles.

Read with `ast` (nothing is imported), so function-level imports count as much as
module-level ones, and `importlib.import_module("podium...")` counts as an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

TRANSPORT, DOMAIN, GROUND = 2, 1, 0

# Prefixes, longest match wins; a module named by none fails the test (so a new
# module is placed on purpose).
LAYERS: dict[str, int] = {
    "podium": TRANSPORT,  # the package itself (version) is imported by nobody below
    "podium.api": TRANSPORT,
    "podium.app": TRANSPORT,
    "podium.cli": TRANSPORT,
    "podium.web": TRANSPORT,
    "podium.ops": TRANSPORT,
    "podium.bench": TRANSPORT,
    # A consumer of the API, like the bench: only the wire modules below it (see
    # test_client_imports_only_wire_modules).
    "podium.client": TRANSPORT,
    "podium.seed": TRANSPORT,
    "podium.__main__": TRANSPORT,
    "podium.boards": DOMAIN,
    "podium.realtime": DOMAIN,
    "podium.store": GROUND,
    "podium.auth": GROUND,
    "podium.metrics": GROUND,
    "podium.keys": GROUND,
    "podium.protocol": GROUND,
    "podium.settings": GROUND,
    "podium.validation": GROUND,
    "podium.errors": GROUND,
    "podium.logs": GROUND,
    "podium.embedded": GROUND,
    "podium.services": GROUND,
    "podium.clock": GROUND,
    "podium.periods": GROUND,
    "podium.cli_common": TRANSPORT,
    "podium.serving": TRANSPORT,
    "podium.workers": TRANSPORT,
    "podium.instance": GROUND,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "podium").rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The podium module `name` refers to (a module, or the module holding a name)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every podium module `name` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from podium import metrics` imports podium.metrics, not podium.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            if target == "podium" or target.startswith("podium."):
                module = resolve(target, known)
                if module is not None and module != name:
                    found.add(module)
    return found


def dynamic_imports(path: Path) -> list[int]:
    """Lines calling `import_module` or `__import__` with a name not written out: such
    an import hides its target from this test (and every reader), so it is refused."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called in ("import_module", "__import__") and not (
            node.args and isinstance(node.args[0], ast.Constant)
        ):
            lines.append(node.lineno)
    return lines


def layer(name: str) -> int:
    prefix = name
    # "podium" itself is only the package: it places no module below it.
    while prefix and (prefix != "podium" or name == "podium"):
        if prefix in LAYERS:
            return LAYERS[prefix]
        prefix = prefix.rpartition(".")[0]
    raise AssertionError(f"{name} has no layer in LAYERS")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def back_arrows(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer(target) > layer(source):
                bad.append(f"{source} -> {target}")
            elif source.startswith("podium.boards") and target.startswith("podium.realtime"):
                bad.append(f"{source} -> {target} (boards never imports realtime)")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)
    with pytest.raises(AssertionError):
        layer("podium.newthing")


def test_no_dynamic_import() -> None:
    found = {name: lines for name, path in modules().items() if (lines := dynamic_imports(path))}
    assert found == {}


def test_no_import_points_up_a_layer() -> None:
    assert back_arrows(graph()) == []


def test_client_imports_only_wire_modules() -> None:
    """The client ships to game servers: no server internals, not even transport ones."""
    allowed = {"podium.protocol", "podium.validation", "podium.errors"}
    edges = graph()
    for name, targets in edges.items():
        if name.startswith("podium.client"):
            outside = {t for t in targets if not t.startswith("podium.client")} - allowed
            assert outside == set(), name
    for name in allowed:
        assert edges[name] <= allowed, name


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize(
    ("edges", "bad"),
    [
        ({"podium.boards.a": {"podium.api.b"}, "podium.api.b": set()}, True),
        ({"podium.boards.a": {"podium.realtime.b"}, "podium.realtime.b": set()}, True),
        ({"podium.realtime.a": {"podium.boards.b"}, "podium.boards.b": set()}, False),
        ({"podium.keys": {"podium.boards.b"}, "podium.boards.b": set()}, True),
        ({"podium.api.a": {"podium.keys"}, "podium.keys": set()}, False),
    ],
)
def test_back_arrows_are_found(edges: dict[str, set[str]], bad: bool) -> None:
    assert bool(back_arrows(edges)) is bad


def test_cycles_are_found() -> None:
    edges = {"podium.cli": {"podium.seed"}, "podium.seed": {"podium.cli"}, "podium.keys": set()}
    assert cycles(edges) == [["podium.cli", "podium.seed"]]
    assert cycles({"podium.cli": {"podium.keys"}, "podium.keys": set()}) == []


def test_function_level_and_importlib_imports_count(tmp_path: Path) -> None:
    source = tmp_path / "podium" / "boards" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "import importlib\n"
        "def f():\n"
        "    from podium.api import games\n"
        "    importlib.import_module('podium.cli')\n"
    )
    known = {"podium.boards.x": source, "podium.api.games": source, "podium.cli": source}
    assert imports_of("podium.boards.x", source, known) == {"podium.api.games", "podium.cli"}
    assert dynamic_imports(source) == []
    source.write_text(
        "import importlib\nfor n in ('podium.cli',):\n    importlib.import_module(n)\n"
    )
    assert dynamic_imports(source) == [3]
