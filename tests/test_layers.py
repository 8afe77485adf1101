"""The package's imports point one way, and the numerical core stays free of I/O.

Layers, bottom to top: errors, validate, extras; nn (numpy only); data, config, store;
inference, ensemble, diagnostics; training, export, plot; cli. A module may import its own package
and the packages its row of ALLOWED lists. Optional extras (mpi4py, matplotlib, onnx,
safetensors) are never imported by an import statement: ``lstm_cli.extras.require`` loads
them where a feature runs.
"""

import ast
import pathlib
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "lstm_cli"

# package -> the lstm_cli packages it may import (besides itself)
_BASE = {"errors", "validate", "extras"}
ALLOWED = {
    "__init__": set(),
    "errors": set(),
    "validate": {"errors"},
    "extras": {"errors"},
    "nn": {"errors", "validate"},
    "data": {"errors", "validate"},
    "config": _BASE | {"nn", "data"},
    "store": _BASE,
    "inference": _BASE | {"nn", "data", "config", "store"},
    "ensemble": _BASE | {"data", "inference"},
    "diagnostics": _BASE | {"nn", "data", "config", "store", "inference", "ensemble"},
    "training": _BASE
    | {"__init__", "nn", "data", "config", "store", "inference", "ensemble", "diagnostics"},
    "export": _BASE | {"__init__", "nn", "data", "config", "store", "inference"},
    "plot": _BASE | {"nn", "data", "config", "store", "inference", "diagnostics"},
    "cli": _BASE
    | {"__init__", "nn", "data", "config", "store", "inference", "ensemble", "diagnostics"}
    | {"training", "export", "plot"},
}
# third-party modules each package may import; the standard library is not listed
_NUMPY = {"numpy"}
ALLOWED_THIRD_PARTY = {
    "__init__": set(),
    "errors": set(),
    "validate": set(),
    "extras": set(),
    "nn": _NUMPY,
    "data": _NUMPY,
    "store": _NUMPY,
    "config": _NUMPY | {"yaml"},
    "inference": _NUMPY,
    "ensemble": _NUMPY,
    "diagnostics": _NUMPY,
    "training": _NUMPY | {"tqdm"},
    "export": _NUMPY,
    "plot": _NUMPY,
    "cli": _NUMPY | {"click"},
}
# the numerical core does no file or terminal I/O
NO_IO_PACKAGES = {"nn"}
IO_MODULES = {"io", "pathlib", "shutil", "tempfile", "json", "csv", "sys", "subprocess"}
IO_CALLS = {"open", "print", "input"}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        top = rel.parts[0].removesuffix(".py")
        yield path, rel, top


def _imports(path, rel):
    """(absolute module names imported by the file, names of functions it calls)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ["lstm_cli", *rel.parts[:-1]]
    names, calls = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # from .. import x: x may be a module
                    names.update(f"{mod}.{a.name}" for a in node.names)
                names.add(mod)
            else:
                names.add(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.add(node.func.id)
    return names, calls


CASES = list(_modules())


@pytest.mark.parametrize("path, rel, top", CASES, ids=[str(c[1]) for c in CASES])
def test_imports_point_one_way(path, rel, top):
    assert top in ALLOWED, f"{rel}: package {top!r} has no place in the layer table"
    names, calls = _imports(path, rel)
    for name in names:
        parts = name.split(".")
        if parts[0] == "lstm_cli":
            target = parts[1] if len(parts) > 1 else "__init__"
            if target == "__version__":
                target = "__init__"
            assert target == top or target in ALLOWED[top], f"{rel} imports {name}"
        elif parts[0] not in sys.stdlib_module_names and parts[0] != "__future__":
            allowed = ALLOWED_THIRD_PARTY[top]
            assert parts[0] in allowed, f"{rel} imports {name} (only {sorted(allowed)})"
    if top in NO_IO_PACKAGES:
        io = {n for n in names if n.split(".")[0] in IO_MODULES}
        assert not io, f"{rel} imports {sorted(io)}: the numerical core does no I/O"
        assert not calls & IO_CALLS, f"{rel} calls {sorted(calls & IO_CALLS)}"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The check itself: an nn module importing the CLI is refused."""
    bad = tmp_path / "lstm_cli" / "nn" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from ..cli import train\nimport json\n")
    names, _ = _imports(bad, bad.relative_to(tmp_path / "lstm_cli"))
    assert "lstm_cli.cli" in names and "json" in names
    with pytest.raises(AssertionError, match="imports lstm_cli.cli"):
        test_imports_point_one_way(bad, bad.relative_to(tmp_path / "lstm_cli"), "nn")
