"""Optional extras: import a package that only some features need, or say which extra to install.

The core install (numpy, click, tqdm, pyyaml) never imports these. A feature that needs one
calls ``require(module, extra, feature)`` at the point of use; a missing package is one
``MissingExtraError`` (exit 7 from the CLI) naming the extra and the command that installs it.
"""

from __future__ import annotations

import importlib

from .errors import MissingExtraError

# extra name -> what it brings (the packages are listed once, in setup.cfg)
EXTRAS = {
    "mpi": "data-parallel training under mpiexec",
    "plot": "pictures (lstm-plot, lstm-eval --plot)",
    "onnx": "ONNX export (lstm-export --to onnx)",
    "safetensors": "PyTorch export and import (lstm-export --to pytorch, lstm-import)",
}


def require(module: str, extra: str, feature: str | None = None):
    """``importlib.import_module(module)``, or MissingExtraError naming ``extra``."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        what = feature or EXTRAS[extra]
        raise MissingExtraError(
            f"{what} needs the optional extra {extra!r} ({module} is not importable: {err}); "
            f"install it with: pip install 'lstm_cli[{extra}]'"
        ) from None
