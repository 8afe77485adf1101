"""--resume: check that a config and data may continue a run, and restore its state."""

from __future__ import annotations

import os

import numpy as np

from ..config import Config, config_from_dict, config_to_dict, load_config
from ..errors import CheckpointError, ConfigError, DataError, LstmCliError
from ..store.checkpoint import load_checkpoint, read_meta
from ..validate import is_int, is_number, show
from .prepare import PreparedData
from .rundir import resume_checkpoint_path

# Config keys that may change when a run is resumed (everything else must match);
# train.distributed only chooses how processes share the work, as their number does.
RESUMABLE_CHANGES = ("train.epochs", "output.dir", "data.test", "train.distributed")
# Keys a run fills in from its training file when the config leaves them null (prepare:
# resolve_csv_columns); a run written before they were filled in recorded null, which
# meant the same columns of the same (fingerprinted) file.
_FILLED_FROM_DATA = ("data.csv.feature_columns",)
_NOT_RESUMABLE = "not a resumable lstm_cli training checkpoint"
_CANNOT = "cannot resume from it"  # a resumable checkpoint whose state is malformed


def config_for_resume(run_dir, overrides=()) -> Config:
    """The config stored in run_dir/last.npz, with --set overrides applied; for the run
    folder of a train.folds ensemble (no last.npz of its own), its config.yaml."""
    ensemble = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(os.path.join(run_dir, "last.npz")) and os.path.isfile(ensemble):
        cfg = load_config(ensemble)
        if cfg.train.folds and cfg.train.fold is None:
            return load_config(ensemble, overrides)
    path = resume_checkpoint_path(run_dir)
    meta = read_meta(path)  # fit() loads and verifies the whole checkpoint once, later
    if "config" not in meta:
        raise CheckpointError(f"{path}: {_NOT_RESUMABLE}")
    return config_from_dict(meta["config"], source=path, overrides=overrides)


def check_config_change(old_config: dict, cfg: Config, run_dir) -> None:
    """A ConfigError when cfg differs from the run's config (a plain dict, as
    config_to_dict writes it) in a key outside RESUMABLE_CHANGES."""
    old = _flatten(old_config)
    new = _flatten(config_to_dict(cfg))
    changed = sorted(
        k
        for k in set(old) | set(new)
        if old.get(k) != new.get(k)
        and k not in RESUMABLE_CHANGES
        and not (k in _FILLED_FROM_DATA and old.get(k) is None)
    )
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise ConfigError(
            f"cannot resume {run_dir}: the config changed in a way that breaks the "
            f"run ({details}). Only {', '.join(RESUMABLE_CHANGES)} may change."
        )


def load_resume_state(cfg: Config, run_dir, data: PreparedData):
    """Read run_dir/last.npz and check that cfg and data may continue it (same architecture,
    data shape and classes, seed...). Returns (the checkpoint, its path)."""
    path = resume_checkpoint_path(run_dir)
    ckpt = load_checkpoint(path)
    meta = ckpt.meta
    if "train_state" not in meta or "config" not in meta or "model" not in meta:
        raise CheckpointError(f"{path}: {_NOT_RESUMABLE}")
    check_config_change(meta["config"], cfg, run_dir)
    state = meta["train_state"]
    done = state.get("epoch") if isinstance(state, dict) else None
    if isinstance(done, int) and cfg.train.epochs < done:
        raise ConfigError(
            f"cannot resume {run_dir}: train.epochs {cfg.train.epochs} is below the {done} "
            f"epochs the run has done; give train.epochs >= {done}"
        )
    spec = meta["model"]
    features = data.train.num_features
    if isinstance(spec, dict) and spec.get("input_size") != features:
        raise DataError(
            f"cannot resume {run_dir}: the training data {data.train.source} now has "
            f"{features} features per step; the run was trained on {spec.get('input_size')}"
        )
    if meta.get("classes") != data.classes:
        raise DataError(
            f"cannot resume {run_dir}: the labels of the training data {data.train.source} "
            f"are now {show(data.classes)}; the run was trained on "
            f"{show(meta.get('classes'))}"
        )
    check_same_training_data(meta, data.fingerprint, run_dir, data.train.source)
    _check_same_split(meta, data, run_dir, path)
    return ckpt, path


def check_same_training_data(meta, fingerprint, run_dir, source) -> None:
    """A DataError when a checkpoint of run_dir (its ``meta``) was trained on other data
    than the training file ``source`` with ``fingerprint`` holds now (either unknown:
    nothing to compare)."""
    then = meta.get("data_fingerprint")
    if then is not None and fingerprint is not None and then != fingerprint:
        raise DataError(
            f"cannot resume {run_dir}: the training data {source} changed since the run "
            f"started (its sequences, their order, labels or values differ), so the "
            f"validation split and normalisation would not be the run's"
        )


def _check_same_split(meta, data: PreparedData, run_dir, path) -> None:
    """A DataError when the same data and config now split otherwise than the run did
    (another version of lstm_cli or numpy): by the checkpoint's "split", or, in one
    written before it was recorded, by the training split's normalisation statistics.
    A "split" that is not a mapping is a CheckpointError naming ``path``."""
    then, now = meta.get("split"), data.split()
    if then is not None and not isinstance(then, dict):
        raise CheckpointError(f"{path}: {_CANNOT}: its split is {show(then)}, not a mapping")
    if then is None:
        norm = meta.get("normalization")
        if not isinstance(norm, dict) or data.mean is None:
            return
        try:
            same = all(
                np.allclose(norm[k], v, rtol=1e-9, atol=0)
                for k, v in (("mean", data.mean), ("std", data.std))
            )
        except (KeyError, TypeError, ValueError):
            same = False
        if same:
            return
        how = "its normalisation statistics differ from the run's"
    elif then == now:
        return
    elif (then.get("train"), then.get("valid")) == (now["train"], now["valid"]):
        how = f"{now['valid']} other sequences validate"
    else:
        how = (
            f"{now['train']} sequences train and {now['valid']} validate; in the run "
            f"{then.get('train')} and {then.get('valid')}"
        )
    raise DataError(
        f"cannot resume {run_dir}: this version of lstm_cli (or numpy) splits the training "
        f"data {data.train.source} otherwise than the run did ({how}); resume with the "
        f"version that started it, or start a new run"
    )


def restore(trainer, ckpt, path) -> None:
    """Continue ``trainer`` from a last.npz it wrote (checked by load_resume_state); a
    state it cannot continue from is a CheckpointError naming ``path``, a best.npz of
    another run one naming best.npz."""
    try:
        _restore_state(trainer, ckpt)
    # OverflowError: a negative or too large rng_state counter
    except (
        LstmCliError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        OverflowError,
    ) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise CheckpointError(f"{path}: {_CANNOT}: {detail}") from None
    best_path = os.path.join(trainer.run_dir, "best.npz")
    if os.path.isfile(best_path):
        best = load_checkpoint(best_path)
        try:
            trainer.best_params = trainer.model.conform_params(best.params)
            _check_best_of_run(best.meta, trainer.history, trainer.best_epoch)
        except LstmCliError as err:
            raise CheckpointError(
                f"{best_path}: not this run's best checkpoint ({err}; the run is "
                f"{path}); move it away to resume"
            ) from None


def _check_best_of_run(best_meta, history, best_epoch) -> None:
    """A run's best.npz is written at its best epoch with the metrics rows up to it: its
    epoch is last.npz's best_epoch and its history the first rows of last.npz's. Or it is
    from an epoch after last.npz's, written just before a crash kept last.npz from being
    rewritten (best.npz is saved first): then last.npz's rows are its first rows, and the
    resumed run repeats that epoch."""
    epoch, theirs = best_meta.get("epoch"), best_meta.get("history")
    if is_int(epoch) and epoch > len(history) and isinstance(theirs, list):
        if theirs[: len(history)] != history:
            raise LstmCliError("its metrics before its epoch are not the run's")
        return
    if epoch != best_epoch:
        raise LstmCliError(f"it is from epoch {epoch}, the run's best epoch is {best_epoch}")
    if theirs != history[:best_epoch]:
        raise LstmCliError("its metrics up to that epoch are not the run's")


def _restore_state(trainer, ckpt) -> None:
    meta = ckpt.meta
    trainer.model.set_params(ckpt.params)
    trainer.optimizer.load_state_dict(ckpt.optim_arrays, meta["optimizer"])
    trainer.schedule.load_state_dict(meta["schedule"])
    trainer.rng.bit_generator.state = meta["rng_state"]
    st = meta["train_state"]
    _check_progress(meta["history"], st, len(trainer.data.train))
    _check_counters(st)
    trainer.history = meta["history"]
    trainer.epoch, trainer.step = st["epoch"], st["step"]
    trainer.best_value, trainer.best_epoch = st["best_value"], st["best_epoch"]
    trainer.bad_epochs = st["bad_epochs"]
    trainer.last_finite_loss = st.get("last_finite_loss")
    trainer.partial = st.get("partial_epoch")
    trainer.stopped_early = bool(st.get("stopped_early", False))  # early stopping stays decided


def _check_counters(state) -> None:
    """A ValueError unless the early-stopping state and the step count are of the types
    the trainer reads (a number or null best value; ints)."""
    for key in ("step", "best_epoch", "bad_epochs"):
        if not (is_int(state[key]) and state[key] >= 0):
            raise ValueError(f"its train_state {key} is {show(state[key])}, not a count")
    for key in ("best_value", "last_finite_loss"):
        value = state.get(key)
        if value is not None and not is_number(value):
            raise ValueError(f"its train_state {key} is {show(value)}, not a number")


# the counters of an unfinished epoch (Trainer._train_epoch's partial), besides its batches
_PARTIAL_SUMS = ("loss_sum", "correct", "seen", "norm_sum", "seconds")


def _check_progress(history, state, n_train) -> None:
    """A ValueError unless ``history`` holds one metrics row per epoch done and the state
    of an unfinished epoch, if any, is one the trainer can go on from (batches of
    training-sequence indices, a position among them, its sums)."""
    done = state["epoch"]
    rows_ok = isinstance(history, list) and all(isinstance(r, dict) for r in history)
    if not rows_ok or [r.get("epoch") for r in history] != list(range(1, len(history) + 1)):
        raise ValueError("its history is not one metrics row per epoch")
    if len(history) != done:
        raise ValueError(f"its history has {len(history)} epochs, its state {done!r}")
    p = state.get("partial_epoch")
    if p is None:
        return
    ok = isinstance(p, dict) and isinstance(p.get("batches"), list)
    ok = ok and all(
        isinstance(b, list) and b and all(is_int(i) and 0 <= i < n_train for i in b)
        for b in p["batches"]
    )
    ok = ok and is_int(p.get("position")) and 0 <= p["position"] <= len(p["batches"])
    ok = ok and all(is_number(p.get(k)) for k in _PARTIAL_SUMS)
    if not ok:
        raise ValueError("the state of its unfinished epoch is malformed")


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def init_from_checkpoint(model, path, classes) -> None:
    """train.init_from: start ``model`` from the parameters of the checkpoint ``path``
    (fine-tuning); its architecture and classes must be this run's (CheckpointError)."""
    ckpt = load_checkpoint(path)
    spec = ckpt.meta.get("model")
    ours = model.spec()
    # what changes the function the weights compute without changing their shapes
    for key in ("head", "forget_bias"):
        if isinstance(spec, dict) and key in spec and spec[key] != ours[key]:
            raise CheckpointError(
                f"{path}: its model.{key} is {spec[key]!r}, this run's is {ours[key]!r}; "
                f"train.init_from needs the same architecture (set model.{key}: {spec[key]})"
            )
    theirs = ckpt.meta.get("classes")
    if theirs is not None and [str(c) for c in theirs] != [str(c) for c in classes]:
        raise CheckpointError(
            f"{path}: its classes {theirs} are not this run's {classes}; train.init_from "
            "needs the same labels"
        )
    try:
        model.set_params(ckpt.params)
    except LstmCliError as err:
        raise CheckpointError(f"{path}: cannot start train.init_from from it: {err}") from None
