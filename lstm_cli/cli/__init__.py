"""Command-line entry points: thin wrappers over the library API.

Each command parses its options, calls the library, renders the result, and maps the
project's own errors (``LstmCliError`` and subclasses) to one line on stderr and the
exit code documented in docs/cli.md. ``--debug`` also shows the full traceback (the exit
code stays the same). One module per command; ``common`` holds what they share.
"""

from .evaluate import evaluate, predict
from .export import export, import_
from .gradcheck import gradcheck
from .plot import plot
from .train import train

__all__ = ["evaluate", "export", "gradcheck", "import_", "plot", "predict", "train"]
