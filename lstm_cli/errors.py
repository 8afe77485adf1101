"""The project's own error types: every expected failure (bad config, bad data,
bad checkpoint, bad usage of the API) raises one of these with a readable message.

The CLI turns them into one line on stderr and a documented exit code; anything
else is a bug and keeps its traceback.
"""


class LstmCliError(ValueError):
    """Base class of every error lstm_cli raises on purpose."""

    exit_code = 1


class ConfigError(LstmCliError):
    """A configuration file or override is invalid (names the file and key)."""


class DataError(LstmCliError):
    """A dataset file is malformed (names the file and line/row)."""


class CheckpointError(LstmCliError):
    """A checkpoint cannot be loaded or written (names the file and what is wrong)."""


class TrainingError(LstmCliError):
    """Training cannot go on (e.g. a non-finite loss); names the epoch and step."""
