"""ibsr's import structure, read from the source: no import cycle between modules, and no
import from a package up into a higher layer.

Every `ibsr/**/*.py` is parsed with `ast` and every import counts, at module level or inside a
function: `import a.b`, `from a import b` (the submodule `a.b` when there is one, else the module
`a`), relative imports, and imports by a computed name (`importlib.import_module(x)`, as a lazy
package front does: such a module is taken to import every ibsr module whose name it holds as a
string). Importing `a.b.c` runs the `__init__` of `a` and `a.b` first; those edges are left out,
as every import checker does, since a package's own front imports its submodules (a cycle by
construction otherwise): a package's front is checked for what it imports itself.

A module may import its own top-level package's modules and lower layers' only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ibsr

PACKAGE = Path(ibsr.__file__).parent
FRONT = "__init__"  # the layer name of `ibsr/__init__.py` itself
IMPORT_CALLS = ("import_module", "__import__")

# Lowest first. A name is a top-level package or module of ibsr; packages in one group do not
# import each other.
LAYERS = [
    # IbsrError, imported by everything; crash-safe writes (atomic_write), used from index to train:
    # both standard library only, neither imports the other
    ("errors", "files"),
    ("geometry",),  # meshes: loading, cleaning, normalizing; the camera rig, the grayscale views, their montage
    ("cpus", "precision"),  # CPU budget, bf16 policy
    ("kernels", "runtime"),  # the rerank kernels; torch / ONNX Runtime running any module
    ("model",),  # the networks, their checkpoints and inputs, inference on a runtime
    # query photos: decoding, the box, the object mask (GrabCut, the mask network), the query tensor;
    # what the Ray build and the Ray evaluation share to start, size and talk to Ray
    ("photos", "ray_cluster"),
    # the index directory: its layout and formats, the table, the sidecar, FAISS, the score bounds,
    # the lock, the one writer, snapshots of one version, verify
    ("index",),
    ("indexer",),  # catalog -> index: discovery, render jobs, encoding, the Ray backend
    ("searcher", "synth"),  # queries -> ranked shapes; procedural shapes and photos (rendered as the index renders)
    # `ibsr/__init__.py` re-exports Indexer and Searcher on first use, so it sits above them;
    # what lies higher may read it (ibsr-serve reports `ibsr.__version__`).
    (FRONT, "eval"),
    ("train", "serve"),  # training reads eval's query files and synth's photos
    ("cli",),  # the command lines, fronts over everything
]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_call(node: ast.AST) -> tuple[bool, str | None]:
    """Whether `node` is `importlib.import_module(...)` / `__import__(...)`, and the module it
    names (None when the name is computed)."""
    if not isinstance(node, ast.Call) or not node.args:
        return False, None
    func = node.func
    if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) not in IMPORT_CALLS:
        return False, None
    arg = node.args[0]
    return True, arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def module_graph(root: Path) -> dict[str, dict[str, int]]:
    """{module: {imported module of the same top-level package: first line}} for the package at `root`."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    top = root.name

    def resolve(name: str) -> str | None:  # the longest known module that `name` lies in
        if name != top and not name.startswith(top + "."):
            return None
        while name not in files and "." in name:
            name = name.rpartition(".")[0]
        return name if name in files else None

    graph: dict[str, dict[str, int]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges: dict[str, int] = {}
        computed = False
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                names = [f"{source}.{a.name}" if f"{source}.{a.name}" in files else source for a in node.names]
            else:
                call, named = _import_call(node)
                names = [named] if named else []
                computed = computed or (call and not named)
            for name in names:
                target = resolve(name)
                if target and target != mod:
                    edges[target] = min(edges.get(target, node.lineno), node.lineno)
        if computed:  # whatever it may import: every ibsr module it names in a string
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in files \
                        and node.value != mod and "." in node.value:
                    edges[node.value] = min(edges.get(node.value, node.lineno), node.lineno)
        graph[mod] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        path.append(mod)
        for target in sorted(graph.get(mod, {})):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[mod] = 2
        return None

    for mod in sorted(graph):
        if mod not in state:
            found = visit(mod)
            if found:
                return found
    return None


def describe_cycle(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def layer_name(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else FRONT


def upward_imports(graph: dict[str, dict[str, int]], layers: list[tuple[str, ...]]) -> list[str]:
    """Imports of a module from another top-level package that is not in a lower layer."""
    level = {name: i for i, group in enumerate(layers) for name in group}
    found = []
    for mod, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            a, b = layer_name(mod), layer_name(target)
            if a != b and level[b] >= level[a]:
                found.append(f"{mod} (line {line}) imports {target}: {b} is not below {a}")
    return found


@pytest.fixture(scope="module")
def graph():
    return module_graph(PACKAGE)


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {describe_cycle(graph, cycle)}"


def test_every_package_has_a_layer(graph):
    named = [name for group in LAYERS for name in group]
    assert len(named) == len(set(named)), "a name in two layers"
    assert {layer_name(mod) for mod in graph} == set(named)


def test_no_import_from_a_higher_layer(graph):
    found = upward_imports(graph, LAYERS)
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- the checker itself


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "fake"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for folder in [p for p in root.rglob("*") if p.is_dir()]:
        (folder / "__init__.py").touch()
    return root


def test_the_checker_reports_a_cycle_through_a_function_level_relative_import(tmp_path):
    root = _package(tmp_path, {
        "low/a.py": "from fake.low.b import thing\n",
        "low/b.py": "thing = 1\n\ndef f():\n    from ..high import c\n    return c\n",
        "high/c.py": "import fake.low.a\n",
    })
    graph = module_graph(root)
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 4
    assert set(cycle) == {"fake.low.a", "fake.low.b", "fake.high.c"}
    assert "fake.low.b (line 4) -> fake.high.c" in describe_cycle(graph, cycle)
    assert find_cycle({k: {t: n for t, n in v.items() if t != "fake.low.a"} for k, v in graph.items()}) is None


def test_the_checker_follows_lazy_fronts_and_reports_upward_imports(tmp_path):
    root = _package(tmp_path, {
        "low/__init__.py": ('_EXPORTS = {"C": "fake.high.c"}\n\ndef __getattr__(name):\n'
                            "    import importlib\n    return getattr(importlib.import_module(_EXPORTS[name]), name)\n"),
        "high/c.py": "from fake.low import d\nC = 1\n",
        "low/d.py": "",
    })
    graph = module_graph(root)
    assert graph["fake.low"] == {"fake.high.c": 1} and graph["fake.high.c"] == {"fake.low.d": 1}
    assert upward_imports(graph, [("low",), ("high",)]) == ["fake.low (line 1) imports fake.high.c: high is not below low"]
    assert upward_imports(graph, [("high", "low")]) == ["fake.high.c (line 1) imports fake.low.d: low is not below high",
                                                        "fake.low (line 1) imports fake.high.c: high is not below low"]
