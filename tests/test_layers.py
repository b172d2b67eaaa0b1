"""Layers point down: the import graph of geoxai/, read with `ast`, imports inside functions included.

The layer order below is the one drawn in docs/design.md ("Layers"). A module may import its own
layer or a lower one; an import that points up must be listed in ALLOWED_UPWARD and carry
``# upward import: <reason>`` on its line. There are no import cycles between modules (a package
importing its own submodules does not count). Internal imports inside functions are allowed only in
the modules of FUNCTION_IMPORTS, each for a stated reason; elsewhere internal imports are at the top.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "geoxai"

# Lowest first. An entry names a module or a package (all its modules); "geoxai" is the package's
# own __init__ only.
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["geoxai", "geoxai.errors", "geoxai.files", "geoxai.cache", "geoxai.devices", "geoxai.weights",
              "geoxai.pretrained", "geoxai.registry", "geoxai.config", "geoxai.labels", "geoxai.statistics",
              "geoxai.store", "geoxai.trainer", "geoxai.stages"]),
    ("data", ["geoxai.data", "geoxai.synthcity", "geoxai.runs", "geoxai.domain", "geoxai.protocols"]),
    ("models", ["geoxai.embedders", "geoxai.segmentation", "geoxai.ldm", "geoxai.retrieval"]),
    ("evaluation", ["geoxai.evaluation"]),
    ("report", ["geoxai.report"]),
    ("commands", ["geoxai.cli", "geoxai.assets", "geoxai.pretrained_build"]),
]

# (importer, imported): why the import points up. At most two.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("geoxai.ldm.autoencoder_training", "geoxai.evaluation.perceptual"):
        "the autoencoder's LPIPS loss is the evaluation's LPIPS, with its no-download cache lookup",
}

_LAZY = ("a command or registry entry point: each command, format or stage loads its models only when it runs, "
         "so `geoxai --help` and listing names import no torch")
_LIGHTER = ("the imported module pulls in more at import (torch, PIL, pandas, a model family, an optional package) "
            "than this module needs, or a test replaces the imported function on its own module; it is loaded on "
            "the path that uses it")
# Modules whose functions may import internal modules, and why. Everywhere else they are at the top.
FUNCTION_IMPORTS: dict[str, str] = {
    "geoxai.assets": _LAZY,
    "geoxai.cli": _LAZY,
    "geoxai.config": _LIGHTER,
    "geoxai.embedders.cosplace": _LIGHTER,
    "geoxai.embedders.probe": _LIGHTER,
    "geoxai.embedders.specs": _LIGHTER,
    "geoxai.embedders.training": _LIGHTER,
    "geoxai.evaluation": _LAZY,
    "geoxai.evaluation.artifacts": _LIGHTER,
    "geoxai.evaluation.context": _LIGHTER,
    "geoxai.evaluation.discovery": _LAZY,
    "geoxai.evaluation.perceptual": _LIGHTER,
    "geoxai.evaluation.plugin": _LIGHTER,
    "geoxai.evaluation.runner": _LIGHTER,
    "geoxai.ldm.autoencoder": _LIGHTER,
    "geoxai.ldm.autoencoder_training": _LIGHTER,
    "geoxai.ldm.callbacks": _LIGHTER,
    "geoxai.ldm.export": _LIGHTER,
    "geoxai.ldm.latent_cache": _LIGHTER,
    "geoxai.ldm.reconstruction": _LIGHTER,
    "geoxai.ldm.sampling": _LIGHTER,
    "geoxai.ldm.training": _LIGHTER,
    "geoxai.ldm.unet": _LIGHTER,
    "geoxai.pretrained_build": _LAZY,
    "geoxai.report.evaluations": _LIGHTER,
    "geoxai.report.report": _LAZY,
    "geoxai.retrieval": _LIGHTER,
    "geoxai.runs": _LIGHTER,
    "geoxai.segmentation.base": _LIGHTER,
    "geoxai.segmentation.groundtruth": _LIGHTER,
    "geoxai.segmentation.synthcity": _LIGHTER,
    "geoxai.segmentation.synthcity_training": _LIGHTER,
    "geoxai.stages": _LAZY,
    "geoxai.store": _LIGHTER,
    "geoxai.trainer": _LIGHTER,
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool
    text: str


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _owner(name: str, known: dict[str, Path]) -> str:
    while name not in known:
        name = name.rpartition(".")[0]
    return name


def imports() -> list[Import]:
    """Every import of a geoxai module by a geoxai module, with where it is and whether in a function."""
    known = modules()
    found = []
    for module, path in known.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        in_function = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(child) for child in ast.walk(node) if child is not node)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.split(".")[0] == "geoxai"]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    package = package[:len(package) - (node.level - 1)]
                    base = ".".join(package + ([base] if base else []))
                if base.split(".")[0] == "geoxai":
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in dict.fromkeys(_owner(t, known) for t in targets):
                found.append(Import(module, target, node.lineno, id(node) in in_function, lines[node.lineno - 1]))
    return found


def layer_of(module: str) -> int:
    best, level = -1, None
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            matches = module == entry or (entry != "geoxai" and module.startswith(entry + "."))
            if matches and len(entry) > best:
                best, level = len(entry), index
    assert level is not None, f"{module} is in no layer: add it to LAYERS (and to the diagram in docs/design.md)"
    return level


def cycles(edges: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), a package's own submodules aside."""
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for edge in edges:
        if edge.imported != edge.importer and not edge.imported.startswith(edge.importer + "."):
            graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_cycles_counting_imports_inside_functions():
    assert cycles(imports()) == []


def test_imports_point_down_the_layers():
    assert len(ALLOWED_UPWARD) <= 2
    upward = {}
    for edge in imports():
        if layer_of(edge.imported) > layer_of(edge.importer):
            upward[(edge.importer, edge.imported)] = edge
    assert sorted(upward) == sorted(ALLOWED_UPWARD), "imports that point up the layers (see docs/design.md)"
    for edge in upward.values():
        assert "# upward import: " in edge.text, f"{edge.importer}:{edge.line} needs '# upward import: <reason>'"


def test_internal_imports_inside_functions_have_a_reason():
    for module, reason in FUNCTION_IMPORTS.items():
        assert module in modules() and reason
    inside = sorted({edge.importer for edge in imports() if edge.in_function})
    assert [m for m in inside if m not in FUNCTION_IMPORTS] == [], "move these imports to the top of the module"
    assert [m for m in FUNCTION_IMPORTS if m not in inside] == [], "no longer needed in FUNCTION_IMPORTS"


def test_the_analysis_sees_imports_inside_functions_and_cycles(tmp_path, monkeypatch):
    package = tmp_path / "geoxai"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from geoxai.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from . import b\n")
    (package / "sub" / "b.py").write_text("from ..a import f  # upward import: a test\n")
    monkeypatch.setitem(globals(), "PACKAGE", package)
    found = {(e.importer, e.imported, e.in_function) for e in imports()}
    assert found == {("geoxai.a", "geoxai.sub.b", True), ("geoxai.sub", "geoxai.sub.b", False),
                     ("geoxai.sub.b", "geoxai.a", False)}
    assert cycles(imports()) == [["geoxai.a", "geoxai.sub.b"]]
