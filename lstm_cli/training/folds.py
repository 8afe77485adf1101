"""``fit_folds``: a cross-validated ensemble (``train.folds: K``) in one run folder.

data.train is cut into K stratified folds (data.labels.stratified_folds, from train.seed).
Member i, whose config is the ensemble's with ``train.fold: i``, trains on the other K-1
folds and early-stops on fold i (prepare.fold_split); its folder ``OUT/fold-{i}`` is an
ordinary run folder (resumable, evaluable and exportable on its own). Every training
sequence is validated on by exactly one member, and every one is trained on by K-1. The
ensemble predicts the mean of its members' probabilities (lstm_cli.ensemble):
``lstm-eval OUT --data FILE`` (run_checkpoints). OUT holds config.yaml (the ensemble's
config) and summary.json: each member's best epoch, the out-of-fold report (each training
sequence predicted by the member that did not train on it; a label with one sequence is in
no fold, so in every member's training part and not in the report) and the ensemble's
data.test report.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..config import Config, OutputConfig, config_to_dict
from ..ensemble import report_of_probs
from ..errors import (
    CheckpointError,
    ConfigError,
    Interrupted,
    LstmCliError,
    resume_hint,
)
from ..inference import (
    encode_dataset_labels,
    load_trained,
    loss_and_probs,
    predict_dataset,
    report_from,
)
from ..store.checkpoint import read_meta
from ..validate import show
from .distributed import make_comm, rank_output
from .members import MemberDied, MemberTask, run_members
from .prepare import prepare_data, run_rng
from .resume import check_config_change, check_same_training_data
from .rundir import (
    LOCK_NAME,
    MEMBER_DIR,
    RUN_FILES,
    RunLock,
    files_beside_a_lock,
    forget_summary,
    is_member_dir_name,
    open_run_dir,
    refuse_if_held_by_other,
    refuse_if_in_use,
    remove_member_run_files,
    remove_orphaned_temporaries,
    remove_run_file,
    retire_earlier_run,
    write_config,
    write_summary,
)


@dataclass
class FoldsResult:
    """What ``fit_folds`` returns: the run folder, its summary.json (on rank 0)."""

    run_dir: str
    members: list[str]  # the members' best.npz paths, fold 0 first
    summary: dict = field(default_factory=dict)
    rank: int = 0


def is_ensemble(cfg: Config) -> bool:
    """True for the config of a whole train.folds ensemble (not of one of its members)."""
    return cfg.train.folds >= 2 and cfg.train.fold is None


def is_ensemble_folder(run_dir) -> bool:
    """True for the folder of a train.folds ensemble: a member folder (fold-i) inside, and
    none of the files a single run writes beside it (a run stopped early may have only
    last.npz; folders named fold-i beside it are the user's)."""
    if any(os.path.lexists(os.path.join(run_dir, n)) for n in _SINGLE_RUN_FILES):
        return False
    with os.scandir(run_dir) as entries:
        return any(is_member_dir_name(e.name) and e.is_dir() for e in entries)


_SINGLE_RUN_FILES = ("metrics.jsonl", "last.npz", "best.npz")  # never in an ensemble's folder


def run_checkpoints(path) -> list[str]:
    """The checkpoints ``path`` names for lstm-eval / lstm-predict: a checkpoint file is
    itself; a run folder, its best.npz; a train.folds ensemble's folder, the best.npz of
    each member its summary.json lists (so members of an earlier, larger ensemble are never
    mixed in). CheckpointError when the folder holds no finished run."""
    if not os.path.isdir(path):
        return [path]
    if is_ensemble_folder(path):
        summary = os.path.join(path, "summary.json")
        if not os.path.exists(summary):
            raise CheckpointError(
                f"{path} holds a train.folds ensemble that has not finished (no summary.json); "
                f"lstm-train --resume {path} finishes it"
            )
        try:
            with open(summary, encoding="utf-8") as fh:
                members = json.load(fh)["members"]
            if not (isinstance(members, list) and members and all(_is_path(m) for m in members)):
                raise ValueError(f"'members' is {show(members)}, not a list of member paths")
            paths = [os.path.join(path, m) for m in members]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{summary}: not an ensemble's summary ({err})") from None
    else:
        paths = [os.path.join(path, "best.npz")]
    for p in paths:
        if not os.path.isfile(p):
            what = "is not a file" if os.path.exists(p) else "does not exist"
            raise CheckpointError(f"{path} holds no finished run: {p} {what}")
    return paths


def _is_path(value) -> bool:
    return isinstance(value, str) and bool(value) and "\0" not in value


def member_config(cfg: Config, fold: int) -> Config:
    """The config of member ``fold``: the ensemble's, holding that fold out, in OUT/fold-i."""
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, fold=fold),
        output=OutputConfig(dir=os.path.join(cfg.output.dir, MEMBER_DIR.format(fold))),
    )


def fit_folds(
    cfg: Config,
    *,
    overwrite=False,
    resume=False,
    progress=True,
    log=print,
    source=None,
    comm=None,
    jobs=1,
) -> FoldsResult:
    """Train the K members of ``cfg`` (is_ensemble) one after the other into cfg.output.dir.

    The data is checked (as member 0 reads it, which cuts every fold) before anything is
    written. overwrite: replace an earlier run in the folder: its files, in the folder and
    its member folders, go and this config.yaml is written just before the first member's
    first checkpoint (_TakeOver; with jobs > 1, asked by the member). resume: keep the
    members that finished (_member_finished), continue the ones with a last.npz, start the
    others; the config may change only as a run's may (resume.RESUMABLE_CHANGES). A signal
    stops the member in training (fit) and names the ensemble's folder to resume. The
    other fit arguments are passed to each member.
    jobs > 1: train that many members at a time, each in a process of its own
    (training.members; one process only, not under MPI), with the same result.
    """
    if not is_ensemble(cfg):
        raise ConfigError(
            f"fit_folds trains a train.folds ensemble; this config has train.folds "
            f"{cfg.train.folds}{'' if cfg.train.fold is None else ' and is a member'}: train "
            "it with fit"
        )
    comm = make_comm() if comm is None else comm
    if jobs > 1 and comm.size > 1:
        raise ConfigError(
            f"parallel members (jobs {jobs}) and {comm.size} MPI processes cannot be combined"
        )
    writer = comm.rank == 0
    progress, log = rank_output(comm, progress, log)  # the members' fit does the same
    run_dir, K = cfg.output.dir, cfg.train.folds
    m0 = member_config(cfg, 0)
    first = prepare_data(m0, run_rng(m0), comm)  # fail early, before anything is written
    for note in first.notes:  # data.frame_to and "auto" keys, resolved once for every member
        log(note)
    resolved_train = dataclasses.replace(cfg.train, augment=first.cfg.train.augment)
    members_cfg = dataclasses.replace(cfg, data=first.cfg.data, train=resolved_train)
    lock = RunLock(run_dir)
    fresh = False  # a new ensemble in a folder that held no run: an early failure empties it
    take = None  # makes a folder that holds an earlier run this run's (_TakeOver)
    who = "members"  # of the ensemble in training, for the message of a signal
    try:
        if writer:
            if resume:
                lock.acquire()
                remove_orphaned_temporaries(run_dir)
                _check_resumable(cfg, run_dir)
                # this config.yaml (a larger train.epochs) once a member is about to write:
                # a resume refused before that changes nothing; one stopped after, and
                # resumed again, goes on with it (not with members "finished" before)
                take = _TakeOver(run_dir, [], cfg)
            else:
                earlier = open_run_dir(run_dir, lock, overwrite=overwrite)
                _refuse_foreign_members(run_dir, K, earlier)
                if earlier:
                    take = _TakeOver(run_dir, earlier, cfg)
                else:
                    write_config(run_dir, cfg)
                    fresh = True
        comm.bcast(None)  # the members start once rank 0 holds the ensemble's folder
        tasks = []
        for fold in range(K):
            mcfg = member_config(members_cfg, fold)
            mdir = mcfg.output.dir
            if resume and _member_finished(mcfg, first.fingerprint):
                log(f"fold {fold + 1} of {K}: finished earlier ({mdir})")
                continue
            go_on = resume and os.path.isfile(os.path.join(mdir, "last.npz"))
            over = not go_on and (overwrite or resume)
            tasks.append(MemberTask(fold, mcfg, over, go_on, source))
        if jobs > 1 and tasks:
            names = ", ".join(MEMBER_DIR.format(t.fold) for t in tasks)
            log(f"training {names} in {run_dir}, {jobs} at a time")
            member_errors = run_members(tasks, jobs, log, before_first_checkpoint=take)
            first_error = next((e for e in member_errors if e is not None), None)
            if first_error is not None:
                raise first_error
        else:
            for t in tasks:
                what = "continuing" if t.resume else "training"
                log(f"fold {t.fold + 1} of {K}: {what} {t.cfg.output.dir}")
                hook = None
                if take is not None and not take.done:
                    hook = functools.partial(take, {t.fold: os.getpid()})
                who = f"fold {t.fold + 1} of {K}"
                t.fit(progress=progress, log=log, comm=comm, before_first_checkpoint=hook)
        members = [os.path.join(run_dir, MEMBER_DIR.format(i), "best.npz") for i in range(K)]
        result = FoldsResult(run_dir, members, rank=comm.rank)
        if writer:
            if take is not None:
                take({})  # done already, unless no member had anything to train
            # members_cfg: frame_to and "auto" already resolved, not redone per member
            result.summary = _ensemble_summary(members_cfg, members, log)
            write_summary(run_dir, result.summary)
        return result
    except BaseException as err:
        if fresh:
            _forget_if_unstarted(run_dir, K)
        elif take is not None and not take.done:  # the earlier run whole: leave no trace
            _remove_empty_members(run_dir, K)
        # what continues is the ensemble (a member's own --resume would train it alone),
        # if this run is in the folder now: not before a take-over, nor once forgotten
        ours = resume or (
            (take is None or take.done) and os.path.isfile(os.path.join(run_dir, "config.yaml"))
        )
        resume_dir = run_dir if ours else None
        if isinstance(err, Interrupted):
            stopped = f"{err.stopped} ({who} of the ensemble in {run_dir})"
            raise Interrupted(stopped, err.signum, resume=resume_dir) from None
        if isinstance(err, MemberDied):
            raise LstmCliError(f"{err}. {resume_hint(resume_dir)}") from None
        raise
    finally:
        lock.release()


def _refuse_foreign_members(run_dir, K, earlier) -> None:
    """A ConfigError when a member folder fold-i (i < K) holds a run that is not a member
    of the earlier run in run_dir (``earlier``, as open_run_dir gives it): a run of its
    own that the member trained there would replace, or one another training holds (a
    lock left by a killed run is none)."""
    for i in range(K):
        name = MEMBER_DIR.format(i)
        d = os.path.join(run_dir, name)
        if name in earlier or not os.path.isdir(d):
            continue
        refuse_if_in_use(d)
        if any(os.path.lexists(os.path.join(d, n)) for n in RUN_FILES):
            raise ConfigError(
                f"{d} holds a run that is not a member of the run in {run_dir}, and this "
                f"ensemble's member {name} would replace it; move it away or choose another "
                f"--output"
            )


def _forget_if_unstarted(run_dir, K) -> None:
    """After a new ensemble failed: when no member wrote a file (a member writes nothing
    before its first checkpoint), remove its config.yaml and empty member folders, so the
    folder is as it was and the same command can run again (as for a single run)."""
    dirs = [os.path.join(run_dir, MEMBER_DIR.format(i)) for i in range(K)]
    if any(os.path.isdir(d) and files_beside_a_lock(d) for d in dirs):
        return  # something to resume (a lock a killed member left is nothing)
    _remove_empty_members(run_dir, K)
    remove_run_file(os.path.join(run_dir, "config.yaml"), "this run's config")


def _remove_empty_members(run_dir, K) -> None:
    """Remove the member folders fold-0 .. fold-(K-1) that are empty (this run made them),
    but for the lock a killed member left (taken, then released: that removes it)."""
    for i in range(K):
        d = os.path.join(run_dir, MEMBER_DIR.format(i))
        if not os.path.isdir(d) or files_beside_a_lock(d):
            continue
        if os.path.lexists(os.path.join(d, LOCK_NAME)):
            try:
                refuse_if_in_use(d)  # a lock a killed member left: removed
            except ConfigError:  # held: another training's now
                continue
        try:
            os.rmdir(d)
        except OSError:  # written to meanwhile: not empty, so not ours to remove
            pass


class _TakeOver:
    """Makes a folder holding an earlier run this ensemble's, once: the earlier run's files
    in it and in its member folders removed, and this run's config.yaml written, so
    --resume continues this run and nothing of the earlier one is read as this run's.
    Called just before the first member's first checkpoint, so a run stopped before that
    leaves the earlier run whole. On --resume (``earlier`` empty) it only writes the
    continued config.yaml: as soon as a continued member has passed its checks (fit), or
    a member started anew is about to write its first checkpoint."""

    def __init__(self, run_dir, earlier, cfg):
        self.run_dir, self.earlier, self.cfg, self.done = run_dir, earlier, cfg, False
        self.refused = None  # the ConfigError of a refusal, which stands for every member

    def __call__(self, training):
        """training: {fold: pid} of this ensemble's members in training now. The earlier
        ensemble's other member folders go, each once locked; in those of the members in
        training only the earlier run files go (a member writes nothing before its first
        checkpoint, which waits for this; one still reading its data has not locked its
        folder yet). A ConfigError, before anything is removed, when another training
        holds one of them; once refused, every later call is refused the same way, so the
        earlier run stays whole and --overwrite can be run again."""
        if self.refused is not None:
            raise self.refused
        if not self.done:
            busy = {MEMBER_DIR.format(f): pid for f, pid in training.items()}
            try:  # both refuse before they remove anything
                for name in (n for n in self.earlier if n in busy):
                    refuse_if_held_by_other(os.path.join(self.run_dir, name), busy[name])
                retire_earlier_run(self.run_dir, [n for n in self.earlier if n not in busy])
            except ConfigError as err:
                self.refused = err
                raise
            # else a member stopped before its first checkpoint leaves the earlier one whole
            for name in (n for n in self.earlier if n in busy):
                remove_member_run_files(os.path.join(self.run_dir, name))
            forget_summary(self.run_dir)  # --resume: the members it reported change
            write_config(self.run_dir, self.cfg)
            self.done = True


def _member_finished(mcfg: Config, fingerprint) -> bool:
    """Whether the member in mcfg.output.dir has nothing left to train under mcfg: it wrote
    its summary.json after exactly train.epochs epochs, or stopped early before them. Any
    other member goes to fit(resume=True), as a single run would: a larger train.epochs
    trains it longer, a smaller one than it ran is refused there. A finished member is
    checked as fit checks a resumed one: its best.npz must be of this member's config
    (ConfigError) and of the training data with ``fingerprint`` (DataError), so the
    ensemble never joins members of two runs."""
    path = os.path.join(mcfg.output.dir, "summary.json")
    try:
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
        done, epochs = summary["epochs_run"], mcfg.train.epochs
        finished = done == epochs or (bool(summary["stopped_early"]) and done < epochs)
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a finished run's summary ({err})") from None
    if finished:
        meta = read_meta(os.path.join(mcfg.output.dir, "best.npz"))
        check_config_change(meta.get("config") or {}, mcfg, mcfg.output.dir)
        check_same_training_data(meta, fingerprint, mcfg.output.dir, mcfg.data.train)
    return finished


def _check_resumable(cfg: Config, run_dir) -> None:
    from ..config import load_config

    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"cannot resume {run_dir}: it holds no config.yaml of an ensemble")
    check_config_change(config_to_dict(load_config(path)), cfg, run_dir)


def _ensemble_summary(cfg: Config, members: list[str], log) -> dict:
    """summary.json of the ensemble: the members' best epochs, the out-of-fold report over
    data.train and the ensemble's data.test report (one process: rank 0). cfg: the
    members' config, with data.frame_to and roll / reverse "auto" resolved."""
    K = cfg.train.folds
    best, oof_probs, oof_y, oof_loss, test_probs = [], None, None, None, None
    test_y = classes = None
    for fold, path in enumerate(members):
        mcfg = member_config(cfg, fold)
        with open(os.path.join(mcfg.output.dir, "summary.json"), encoding="utf-8") as fh:
            s = json.load(fh)
        best.append({k: s[k] for k in ("best_epoch", "best_value", "epochs_run")})
        tm = load_trained(path)
        data = prepare_data(mcfg, run_rng(mcfg))
        classes = data.classes
        if oof_probs is None:  # (N, K), (N,): -1 marks a sequence in no fold (a lone label)
            N = len(data.train) + len(data.valid)
            oof_probs, oof_y = np.zeros((N, len(classes))), np.full(N, -1, dtype=np.int64)
            oof_loss = np.zeros(N)
        bs = cfg.train.batch_size
        # each sequence's loss as lstm-eval of its member gives it (the all head: the mean
        # of its per-step losses, not the loss of its mean probabilities)
        losses, probs = loss_and_probs(tm.model, data.valid, data.y_valid, tm.mean, tm.std, bs)
        oof_probs[data.valid_index], oof_loss[data.valid_index] = probs, losses
        oof_y[data.valid_index] = data.y_valid
        if data.test is not None:
            p = predict_dataset(tm.model, data.test, tm.mean, tm.std, bs) / K
            test_probs = p if test_probs is None else test_probs + p
            test_y = encode_dataset_labels(data.test, classes)
    folded = oof_y >= 0
    oof = report_from(oof_loss[folded], oof_probs[folded], oof_y[folded], classes, cfg.data.train)
    log(
        f"out-of-fold ({K} folds of {cfg.data.train}): accuracy {oof['accuracy']:.4f}  "
        f"loss {oof['loss']:.4f}  macro F1 {oof['macro_f1']:.4f}"
    )
    test = None
    if test_probs is not None:
        test = report_of_probs(test_probs, test_y, classes, cfg.data.test)
        log(
            f"test ({cfg.data.test}, the ensemble of {K}): accuracy {test['accuracy']:.4f}  "
            f"loss {test['loss']:.4f}  macro F1 {test['macro_f1']:.4f}"
        )
    return {
        "folds": K,
        "members": [os.path.relpath(p, cfg.output.dir) for p in members],
        "member_best": best,
        "classes": classes,
        "out_of_fold": oof,
        "test": test,
    }
