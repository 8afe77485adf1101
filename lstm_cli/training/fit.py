"""``fit``: one training from a config to a written run folder.

It validates everything it can (data files, labels, feature counts, the run folder)
*before* it writes anything, so a bad input never damages an existing run, and holds the
run folder's lock (rundir.RunLock) for the whole run.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field

from ..config import Config
from ..errors import ConfigError, TrainingError
from ..inference import TrainedModel, encode_dataset_labels, report_from
from .distributed import SingleProcess, make_comm, rank_output, worth_splitting
from .folds import is_ensemble
from .loop import Trainer
from .prepare import class_weight_vector, prepare_data, run_rng
from .resume import load_resume_state
from .rundir import (
    RunLock,
    forget_summary,
    gradflow_lines,
    open_run_dir,
    resume_checkpoint_path,
    write_config,
    write_summary,
)


@dataclass
class TrainResult:
    """What ``fit`` returns: the best model (restored), its history and where it was saved."""

    trained: TrainedModel
    history: list
    best_epoch: int
    run_dir: str
    stopped_early: bool = False
    test_report: dict | None = None
    summary: dict = field(default_factory=dict)
    rank: int = 0  # this process's rank (MPI); only rank 0 wrote the run folder


def fit(
    cfg: Config,
    *,
    overwrite=False,
    resume=False,
    progress=True,
    log=print,
    source=None,
    comm=None,
    before_first_checkpoint=None,
) -> TrainResult:
    """Train a model as ``cfg`` says; write the run folder; return the best model.

    overwrite: replace the files of a non-empty run folder. resume: continue the run in
    cfg.output.dir from its last.npz (parameters, optimizer and schedule state, RNG state,
    history, early-stopping state, position inside an unfinished epoch). progress: show
    a tqdm bar on stderr (it turns itself off when stderr is not a terminal). log: where
    the per-epoch summary lines go. source: where train.class_weights came from, the
    config file or the --set that gave it (config.value_origin); named in its error.
    SIGINT/SIGTERM save last.npz after the current batch and raise Interrupted.
    before_first_checkpoint: a callable run (on rank 0) just before this run writes its
    first file (a new run; fit_folds makes its folder the ensemble's then), or once a
    resumed run has passed its checks (fit_folds writes the continued config.yaml).
    The run folder is locked for the whole run (rundir.RunLock): a second training into
    it is refused.

    comm: the communicator (training.distributed); by default MPI's when a launcher
    started more than one process, else one process. Every rank calls fit with the same
    config; rank 0 alone takes the lock, writes files, logs and shows progress. When each
    rank's share of a batch would be too small to pay for splitting it
    (distributed.worth_splitting), rank 0 trains alone and the others return None.
    """
    if is_ensemble(cfg):
        raise ConfigError(
            f"train.folds {cfg.train.folds} makes a cross-validated ensemble: train it with "
            "fit_folds (as lstm-train does); fit trains one model"
        )
    comm = make_comm() if comm is None else comm
    if comm.size > 1 and not worth_splitting(cfg, comm.size):
        if comm.rank != 0:  # idle: a signal to the job is rank 0's to handle
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_IGN)
            return None
        log(
            f"train.batch_size {cfg.train.batch_size} over {comm.size} processes is too little "
            f"work per process to gain from splitting (model.hidden_size "
            f"{cfg.model.hidden_size}); training in one process"
        )
        comm = SingleProcess()
    writer = comm.rank == 0
    progress, log = rank_output(comm, progress, log)
    run_dir = cfg.output.dir
    rng = run_rng(cfg)
    data = prepare_data(cfg, rng, comm)  # everything user-supplied is checked before any write
    cfg = data.cfg  # frame_to and "auto" resolved: what the run folder and checkpoints record
    if cfg.train.fold is None:  # a member's notes are its ensemble's, logged by fit_folds
        for note in data.notes:
            log(note)
    lock = RunLock(run_dir)
    try:
        resumed = None
        if resume:  # lock before reading the state to continue, so no other run changes it
            resume_checkpoint_path(run_dir)
            if writer:
                lock.acquire()
            comm.bcast(None)  # the others read last.npz once rank 0 holds the lock
            resumed = load_resume_state(cfg, run_dir, data)  # (checkpoint, path)
        data.class_weights = class_weight_vector(cfg, data.classes, data.y_train, source)
        trainer = Trainer(
            cfg, data, rng, progress=progress, log=log, comm=comm, resuming=resumed is not None
        )
        # --overwrite of a folder holding an earlier run: its files stay until this run
        # writes its first checkpoint (Trainer._retire_earlier_run), so a run that fails
        # early loses nothing.
        earlier = None
        if writer:
            earlier = open_run_dir(run_dir, lock, overwrite=overwrite, resume=resume)
        trainer.earlier_run = comm.bcast(earlier)
        if resumed is not None:
            trainer.restore(*resumed)
            if writer and trainer.epochs_left and cfg.train.gradflow_every:
                gradflow_lines(run_dir)  # appended to at its first recording epoch: readable?
            if writer:  # the run as continued (and an ensemble's, by its hook)
                write_config(run_dir, cfg)
                forget_summary(run_dir)
                if before_first_checkpoint is not None:
                    before_first_checkpoint()
        else:  # with the first checkpoint, as an earlier run's files are retired
            trainer.config_pending = True
            trainer.before_first_checkpoint = before_first_checkpoint
        trainer.run()
        return _finish(trainer, log)
    finally:
        lock.release()


def _finish(trainer: Trainer, log) -> TrainResult:
    """Restore the best parameters, evaluate data.test, write summary.json."""
    data, model = trainer.data, trainer.model
    if trainer.history and not trainer.best_epoch:  # every validation loss overflowed
        raise TrainingError(
            f"no epoch had a finite {trainer.best_metric}: the model's outputs overflow on "
            f"the validation data. {trainer.kept()} Try a lower train.optimizer.lr."
        )
    model.set_params(trainer.best_params)
    trained = TrainedModel(model, data.classes, data.mean, data.std, trainer.base_meta)
    test_report = None
    if data.test is not None:
        y = encode_dataset_labels(data.test, data.classes)
        losses, probs = trainer.losses_and_probs(data.test, y)
        test_report = report_from(losses, probs, y, data.classes, data.test.source)
        log(
            f"test ({data.test.source}): accuracy {test_report['accuracy']:.4f}  loss "
            f"{test_report['loss']:.4f}  macro F1 {test_report['macro_f1']:.4f}  "
            f"(best epoch {trainer.best_epoch})"
        )
    summary = {
        "best_epoch": trainer.best_epoch,
        "best_metric": trainer.best_metric,
        "best_value": trainer.best_value,
        "epochs_run": len(trainer.history),
        "stopped_early": trainer.stopped_early,
        "num_parameters": model.num_parameters(),
        "train_sequences": len(data.train),
        "valid_sequences": 0 if data.valid is None else len(data.valid),
        "classes": data.classes,
        "test": test_report,
    }
    if trainer.writer:
        write_summary(trainer.run_dir, summary)
    model.release_buffers()  # the training batches' work arrays are not needed any more
    return TrainResult(
        trained,
        trainer.history,
        trainer.best_epoch,
        trainer.run_dir,
        trainer.stopped_early,
        test_report,
        summary,
        trainer.comm.rank,
    )
