"""The import graph of the geoguess package: no cycles, layers pointing one way.

Every import counts, also those inside functions (lazy, to keep start-up fast) and
under ``TYPE_CHECKING``: a cycle through either still ties two modules together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "geoguess"

# The cluster tree is a data structure: it takes arrays and plain objects, and the
# Geolocator chooses between it and flat search.
TREE_MODULES = (
    "geoguess.clustering",
    "geoguess.gather_dot",
    "geoguess.tree",
    "geoguess.tree_build",
    "geoguess.tree_search",
)


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from . import x`` names module x)."""
    mods = _modules(root)
    top = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(resolve(a.name) for a in node.names if a.name.split(".")[0] == top)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != top:
                    continue
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in mods else resolve(target))
        graph[name] = {d for d in deps if d and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "geoguess.geolocator" in graph
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    )
    (pkg / "b.py").write_text("def f():\n    from . import a\n    from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("from ..a import x\nimport pkg.b\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.a", "pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a", "pkg.b"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_tree_modules_take_plain_objects_and_never_reach_the_geolocator() -> None:
    graph = import_graph()
    for name in TREE_MODULES:
        assert name in graph, name
        direct = {"geoguess.store", "geoguess.manifest", "geoguess.galleries"} & graph[name]
        assert not direct, f"{name} imports {direct}"
        reached, todo = set(), [name]
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in reached:
                    reached.add(dep)
                    todo.append(dep)
        for core in ("geoguess.geolocator", "geoguess.model"):
            assert core not in reached, f"{name} reaches {core}"


def _reached(graph: dict[str, set[str]], name: str) -> set[str]:
    reached, todo = set(), [name]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in reached:
                reached.add(dep)
                todo.append(dep)
    return reached


def test_the_photo_layer_works_on_the_model_and_never_reaches_the_public_object() -> None:
    # Geolocator's methods delegate to these modules; if one of them imported it back,
    # the public object and its implementation would be one tangle again.
    graph = import_graph()
    assert "geoguess.model" in graph["geoguess.geolocator"]
    for name in (
        "geoguess.locate",
        "geoguess.scan",
        "geoguess.evaluate",
        "geoguess.llm",
        "geoguess.maps",
    ):
        assert "geoguess.geolocator" not in _reached(graph, name), name


def test_locating_a_photo_loads_no_measurement_build_or_optional_code(
    tiny_home: Path, photos_dir: Path
) -> None:
    # What `geoguess photo.jpg` loads: benchmarks, the model builder and the optional
    # heavy packages stay out of it (they are for `geoguess bench`, `models build`,
    # `--llm` and `--engine ray`).
    script = (
        "import sys\n"
        "from geoguess.cli import main\n"
        f"sys.argv = ['geoguess', '--json', {str(photos_dir / 'gps_DSCN0010.jpg')!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"predictions"' in run.stdout
    line = next(x for x in run.stderr.splitlines() if x.startswith("MODULES "))
    loaded = set(line.split()[1:])
    assert "geoguess.locate" in loaded  # the probe saw the real run
    unwanted = {
        m
        for m in loaded
        if m.split(".")[0] in {"torch", "litellm", "ray", "geoclip", "onnx"}
        or m in {"geoguess.bench", "geoguess.bench_search"}
        or m.startswith(("geoguess.builder", "geoguess.llm.client", "geoguess.ray_scan"))
    }
    assert not unwanted, sorted(unwanted)
