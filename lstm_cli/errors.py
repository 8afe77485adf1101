"""The project's own error types: every expected failure (bad config, bad data,
bad checkpoint, bad usage of the API) raises one of these with a readable message.

The CLI turns them into one line on stderr and a documented exit code (docs/cli.md,
"Exit codes"): 1 generic, 3 config, 4 data, 5 checkpoint, 6 training stopped, 7 an
optional extra is missing; click uses 2 for usage errors. Anything else is a bug and
keeps its traceback.
"""


class LstmCliError(ValueError):
    """Base class of every error lstm_cli raises on purpose."""

    exit_code = 1


class ConfigError(LstmCliError):
    """A configuration file or override is invalid (names the file and key)."""

    exit_code = 3


class DataError(LstmCliError):
    """A dataset file is malformed (names the file and line/row)."""

    exit_code = 4


class CheckpointError(LstmCliError):
    """A checkpoint cannot be loaded or written (names the file and what is wrong)."""

    exit_code = 5


class TrainingError(LstmCliError):
    """Training cannot go on (e.g. a non-finite loss); names the epoch and step."""

    exit_code = 6


class Interrupted(LstmCliError):
    """Training was stopped by SIGINT (exit 130) or SIGTERM (exit 143). ``stopped`` says
    where, and what was saved; ``resume`` is the folder whose ``lstm-train --resume``
    continues the run, or None: there is nothing to resume. The message ends with that."""

    def __init__(self, stopped, signum=2, resume=None):
        super().__init__(f"{stopped}. {resume_hint(resume)}")
        self.stopped, self.signum, self.resume = stopped, int(signum), resume
        self.exit_code = 128 + int(signum)


def resume_hint(resume) -> str:
    """The sentence ending a message about a training that ended before its end: the folder
    whose ``lstm-train --resume`` continues it, or that there is nothing to resume."""
    return f"Continue with: lstm-train --resume {resume}" if resume else "Nothing to resume."


class MissingExtraError(LstmCliError):
    """A feature needs an optional extra that is not installed (names the extra)."""

    exit_code = 7


class Terminated(BaseException):
    """SIGTERM, raised as Python raises KeyboardInterrupt for SIGINT (cli.common while a
    command runs; a second SIGTERM in training, training.signals), so that a command ends
    on it as on SIGINT: exit 143, and under mpiexec the whole job."""
