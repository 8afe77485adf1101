"""lstm_cli: sequence classification with a from-scratch NumPy LSTM and hand-written BPTT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lstm_cli")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
