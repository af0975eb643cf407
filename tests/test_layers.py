"""Imports run one way: every module's imports, read with `ast`, against the declared layers.

A module may import from its own layer and from any layer below it, never from one above;
no two modules may import each other, directly or around a circle; production code never
imports the tests. Imports inside functions and `TYPE_CHECKING` blocks count too: a lazy
import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Top to bottom. A name covers the module of that name and every module below it; the
# longest matching name decides, so `services.store` sits below the rest of `services`.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("tests", ("tests", "conftest")),
    ("benchmark", ("bench",)),
    ("entry points", ("app", "gunicorn.conf")),
    ("web edge", ("server",)),
    ("the call and its domain", ("services",)),
    ("storage, settings, logs, metrics", ("services.store", "services.settings", "services.logging_setup",
                                          "services.metrics")),
    ("prompts", ("prompts",)),
]
SOURCE_DIRS = ("server", "services", "prompts", "bench", "tests")
TOP_FILES = ("app.py", "gunicorn.conf.py", "conftest.py")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, dirs=SOURCE_DIRS, top_files=TOP_FILES) -> dict[str, Path]:
    found = {module_name(root, root / name): root / name for name in top_files if (root / name).exists()}
    for folder in dirs:
        for path in sorted((root / folder).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports (a `from pkg import mod` names the submodule)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` of a project module, or the nearest enclosing project module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(module: str, layers=LAYERS) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching name, layer index)
    for index, (_title, names) in enumerate(layers):
        for prefix in names:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return None if best is None else best[1]


def graph(root: Path, **kwargs) -> dict[str, set[str]]:
    modules = project_modules(root, **kwargs)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def upward_imports(edges: dict[str, set[str]], layers=LAYERS) -> list[str]:
    problems = []
    for module, targets in sorted(edges.items()):
        mine = layer_of(module, layers)
        if mine is None:
            problems.append(f"{module} is in no declared layer")
            continue
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if theirs is not None and theirs < mine:
                problems.append(f"{module} ({layers[mine][0]}) imports {target} ({layers[theirs][0]})")
    return problems


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_imports_follow_the_declared_layers():
    assert upward_imports(graph(ROOT)) == []


def test_no_import_circles():
    assert circles(graph(ROOT)) == []


def test_production_code_never_imports_the_tests():
    edges = graph(ROOT)
    offenders = [f"{module} imports {target}" for module, targets in edges.items()
                 if not module.startswith("tests") and module != "conftest"
                 for target in targets if target.startswith("tests")]
    assert offenders == []


def test_every_top_level_area_is_read(tmp_path):
    # The checks above mean something only if they see the code: each area has modules.
    edges = graph(ROOT)
    for area in ("app", "gunicorn.conf", "server.routes.media", "services.call_session", "services.store.models",
                 "prompts.assembly", "bench.calls", "tests.harness"):
        assert area in edges
    assert "services.store.models" in edges["services.call_journal"]


def test_the_checker_catches_an_upward_import_a_circle_and_a_test_import(tmp_path):
    files = {
        "server/__init__.py": "",
        "server/web.py": "from services import call\n",
        "services/__init__.py": "",
        "services/call.py": "from services.helper import x\n",
        "services/helper.py": "def f():\n    from services import call\n",  # a lazy import closes a circle
        "services/store/__init__.py": "",
        "services/store/models.py": "from ..call import y\n",  # storage reaching up, relatively
        "prompts/__init__.py": "import server.web\n",
        "tests/__init__.py": "",
        "tests/fake.py": "",
        "bench/__init__.py": "from tests.fake import z\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = graph(tmp_path, dirs=SOURCE_DIRS, top_files=())
    assert upward_imports(edges) == [
        "bench (benchmark) imports tests.fake (tests)",
        "prompts (prompts) imports server.web (web edge)",
        "services.store.models (storage, settings, logs, metrics) imports services.call (the call and its domain)",
    ]
    assert circles(edges) == [["services.call", "services.helper"]]
