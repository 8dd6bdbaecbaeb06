"""The house plan (docs/design.md section 2), checked on the source: every import, deferred ones included.

The AST of every module under bundler/ is walked, function bodies too, and the test fails on:
- an import cycle between bundler modules;
- an import of another module's private (_name) name;
- a package importing a floor above its own (FLOORS);
- runtime/ importing anything from bundler outside runtime/ (it ships inside every bundle);
- a bundler-internal import deferred into a function body outside cli/ when nothing heavy is behind
  it (an import stays deferred only to keep torch and other heavy libraries off commands that do
  not need them; cli/ command bodies defer on purpose, see cli/__init__.py).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "bundler"

# The floors, lowest first: a package imports only from its own floor or below.
FLOORS = (
    ("bundler", "bundler.errors", "bundler.ui", "bundler.paths"),
    ("bundler.bundle",),
    ("bundler.hub", "bundler.records", "bundler.oci"),
    ("bundler.recipe",),
    ("bundler.publish",),
    ("bundler.runners",),
    ("bundler.audit",),
    ("bundler.pipeline",),
    ("bundler.cli", "bundler.__main__"),
)
# Libraries whose import costs start-up time a command that does not need them should not pay.
HEAVY = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "matplotlib",
    "huggingface_hub",
    "docker",
    "jinja2",
    "pydantic",
    "cryptography",
    "rich",
    "bagit",
    "safetensors",
)

# cli/ command bodies defer on purpose (cli/__init__.py says why); runtime/ runs apart. bundle/ and
# recipe/config.py are being rewritten under issues 15 and 16: they join the check once those land.
NOT_CHECKED_FOR_DEFERRAL = ("bundler.cli", "bundler.runtime", "bundler.bundle", "bundler.recipe.config")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the bundler module (or library) imported
    names: tuple[str, ...]  # names taken from it (`from x import a, b`)
    line: int
    deferred: bool  # inside a function body


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _owner(dotted: str) -> str | None:
    """The bundler module a dotted name lives in (`bundler.bundle.bag.X` -> `bundler.bundle.bag`)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[Import] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, (), child.lineno, deferred))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    package = package[: len(package) - child.level + 1]
                    base = ".".join([*package, base] if base else package)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    if sub in MODULES:  # `from bundler.bundle import bag`: the module itself
                        found.append(Import(module, sub, (), child.lineno, deferred))
                    else:
                        found.append(Import(module, base, (alias.name,), child.lineno, deferred))
            visit(child, inside)

    visit(tree, False)
    return found


IMPORTS = {m: _imports(m) for m in MODULES}


def _internal(imp: Import) -> str | None:
    if not imp.target.startswith("bundler"):
        return None
    owner = _owner(imp.target)
    return owner if owner != imp.module else None


def _floor(module: str) -> int | None:
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    return None if best is None else best[0]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, imports in IMPORTS.items():
        for imp in imports:
            target = _internal(imp)
            if target:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def heavy_at_import(module: str, seen: set[str] | None = None) -> set[str]:
    """The heavy libraries importing `module` loads (through top-level imports, transitively)."""
    seen = set() if seen is None else seen
    if module in seen:
        return set()
    seen.add(module)
    found: set[str] = set()
    for imp in IMPORTS[module]:
        if imp.deferred:
            continue
        if imp.target.split(".")[0] in HEAVY:
            found.add(imp.target.split(".")[0])
        target = _internal(imp)
        if target:
            found |= heavy_at_import(target, seen)
    return found


def needless_deferral(imp: Import) -> str | None:
    """Why a deferred bundler import should be at the top, or None when deferring it keeps something heavy off."""
    target = _internal(imp)
    if not imp.deferred or target is None:
        return None
    extra = heavy_at_import(target) - heavy_at_import(imp.module)
    if not extra:
        return f"defers `{target}`, which loads nothing heavy {imp.module} does not load already: import it at the top"
    source = MODULES[imp.module].read_text(encoding="utf-8").splitlines()
    said = source[imp.line - 1] + "\n" + source[imp.line - 2]
    if "#" not in said or not any(lib in said for lib in extra):
        return f"defers `{target}` (it loads {', '.join(sorted(extra))}) without a comment naming what it keeps off"
    return None


def where(imp: Import) -> str:
    return f"{MODULES[imp.module].relative_to(ROOT.parent)}:{imp.line}"


# --- the checks on bundler's own source ---


# Cycles that landed from work in progress elsewhere, each with the issue that removes it; the test
# fails on any other cycle, and on a listed one that is gone (so the list only shrinks).
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def test_no_import_cycle_deferred_imports_counted() -> None:
    found = {tuple(c) for c in cycles(_graph())}
    assert found - set(KNOWN_CYCLES) == set()
    assert set(KNOWN_CYCLES) - found == set(), "a listed cycle is gone: remove it from KNOWN_CYCLES"


def test_no_module_imports_another_modules_private_name() -> None:
    bad = [
        f"{where(imp)} imports {name} from {imp.target}"
        for imports in IMPORTS.values()
        for imp in imports
        if _internal(imp)
        for name in imp.names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert bad == []


def test_packages_import_only_their_floor_or_below() -> None:
    bad = []
    for module, imports in IMPORTS.items():
        if module.startswith("bundler.runtime"):
            continue
        for imp in imports:
            target = _internal(imp)
            if target and not target.startswith("bundler.runtime"):
                mine, theirs = _floor(module), _floor(target)
                assert mine is not None and theirs is not None, f"{module} or {target} has no floor in FLOORS"
                if theirs > mine:
                    above = f"{target} ({FLOORS[theirs][0]})"
                    bad.append(f"{where(imp)} ({FLOORS[mine][0]}) imports {above}, a floor above")
    assert bad == []


def test_runtime_imports_nothing_from_bundler_outside_runtime() -> None:
    bad = [
        f"{where(imp)} imports {imp.target}"
        for module, imports in IMPORTS.items()
        if module.startswith("bundler.runtime")
        for imp in imports
        if imp.target.startswith("bundler") and not imp.target.startswith("bundler.runtime")
    ]
    assert bad == []


def test_bundler_imports_are_deferred_only_to_keep_heavy_libraries_off() -> None:
    bad = [
        f"{where(imp)} {why}"
        for module, imports in IMPORTS.items()
        if not module.startswith(NOT_CHECKED_FOR_DEFERRAL)
        for imp in imports
        if (why := needless_deferral(imp))
    ]
    assert bad == []


def test_tests_take_shared_helpers_from_fixtures_not_from_other_test_modules() -> None:
    tests = Path(__file__).resolve().parent
    bad = [
        f"{path.relative_to(tests.parent)}:{node.lineno} imports {node.module}"
        for path in sorted(tests.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_")
    ]
    assert bad == []


# --- the checker itself, on made-up graphs (a check that cannot fail proves nothing) ---


def test_cycles_finds_a_cycle_through_a_deferred_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("module", "floor"),
    [("bundler.errors", 0), ("bundler.bundle.bag", 1), ("bundler.records", 2), ("bundler.cli.audit", 8)],
)
def test_floor_of_a_module(module: str, floor: int) -> None:
    assert _floor(module) == floor


def test_heavy_at_import_follows_top_level_imports_only() -> None:
    assert "pydantic" in heavy_at_import("bundler.recipe.config")
    assert heavy_at_import("bundler.bundle.hashing") == set()
