"""The import rules between forkserve's layers, read from the source with ``ast``.

Imports under ``if TYPE_CHECKING:`` are for annotations only and never run,
so they count only where a rule says "not even for types".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "forkserve"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, with_types: bool) -> set[str]:
    """The absolute names of the modules a file imports (inside functions too)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node) and not with_types:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # "from . import logs" names a module, not an attribute
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def forkserve_imports(module: str, with_types: bool = False) -> set[str]:
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    names = imports(path, with_types)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in names if name in modules and name != "forkserve"}


@pytest.mark.parametrize("path", sorted((PACKAGE / "http").glob("*.py")), ids=lambda p: p.name)
def test_http_imports_nothing_from_the_rest_of_forkserve(path: Path) -> None:
    outside = {
        name
        for name in forkserve_imports(module_name(path), with_types=True)
        if not name.startswith("forkserve.http")
    }
    assert not outside, f"{path.name} imports {sorted(outside)}"


# module -> modules it must not import at run time
RULES = {
    # The blocking transport knows the socket, the parser and the configuration: no phase, no request.
    "forkserve.transport": {
        "forkserve.connection",
        "forkserve.handler",
        "forkserve.worker",
        "forkserve.balance",
    },
    # The request's orchestration sits under the phase machine, not beside it.
    "forkserve.handler": {"forkserve.connection", "forkserve.worker", "forkserve.balance"},
    # A connection knows nothing of the worker that drives it.
    "forkserve.connection": {
        "forkserve.worker",
        "forkserve.balance",
        "forkserve.master",
        "forkserve.threads",
    },
    # Configuration is data: it depends on no layer that reads it.
    "forkserve.service": {
        "forkserve.connection",
        "forkserve.handler",
        "forkserve.transport",
        "forkserve.worker",
    },
    # The WSGI call writes through a Transport protocol, not a socket layer.
    "forkserve.wsgi": {
        "forkserve.connection",
        "forkserve.handler",
        "forkserve.transport",
        "forkserve.worker",
    },
    # Balancing needs listeners and a worker-shaped protocol, not the worker.
    "forkserve.balance": {"forkserve.worker", "forkserve.connection", "forkserve.master"},
}


@pytest.mark.parametrize("module", sorted(RULES))
def test_layers_import_only_downwards(module: str) -> None:
    forbidden = forkserve_imports(module) & RULES[module]
    assert not forbidden, f"{module} imports {sorted(forbidden)}"


def test_the_transport_does_not_even_name_the_layers_above_it() -> None:
    above = {"forkserve.connection", "forkserve.handler", "forkserve.worker"}
    assert not forkserve_imports("forkserve.transport", with_types=True) & above


def test_only_the_gevent_worker_imports_gevent() -> None:
    importers = {
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if any(name == "gevent" or name.startswith("gevent.") for name in imports(path, with_types=True))
    }
    assert importers == {"forkserve.gevent_worker"}


def test_the_rules_name_real_modules() -> None:
    """A rule about a renamed module would pass for ever: every name must exist."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    named = set(RULES) | {name for names in RULES.values() for name in names}
    assert named <= modules, sorted(named - modules)
