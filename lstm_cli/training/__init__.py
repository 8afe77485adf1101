"""Training: data -> model -> epochs of BPTT -> checkpoints and metrics in a run folder.

``fit(cfg)`` (fit.py) is the library entry point behind ``lstm-train``. The modules:
prepare (data, split, normalisation, class weights), loop (the Trainer), rundir (the run
folder, its lock and files), resume (checks and state restore), signals, env.
``fit_folds(cfg)`` (folds.py) trains the members of a train.folds ensemble with fit.
"""

from .fit import TrainResult, fit
from .folds import FoldsResult, fit_folds, is_ensemble, run_checkpoints
from .loop import Trainer, fmt_metric
from .loop import _metric_better as _metric_better  # tests import it from here
from .prepare import PreparedData, class_weight_vector, load, prepare_data
from .resume import RESUMABLE_CHANGES, config_for_resume
from .rundir import LOCK_NAME, METRIC_COLUMNS, RUN_FILES, RunLock, resume_checkpoint_path

__all__ = [
    "LOCK_NAME",
    "METRIC_COLUMNS",
    "PreparedData",
    "RESUMABLE_CHANGES",
    "RUN_FILES",
    "RunLock",
    "TrainResult",
    "Trainer",
    "FoldsResult",
    "class_weight_vector",
    "config_for_resume",
    "fit",
    "fit_folds",
    "is_ensemble",
    "fmt_metric",
    "load",
    "prepare_data",
    "resume_checkpoint_path",
    "run_checkpoints",
]
