"""The metadata both export formats carry: labels, normalisation and the architecture."""

from __future__ import annotations

import json

from .. import __version__
from ..errors import CheckpointError


def normalization_of(mean, std) -> dict | None:
    """The training statistics as the files carry them: {"mean": [...], "std": [...]}."""
    return None if mean is None else {"mean": list(map(float, mean)), "std": list(map(float, std))}


def export_metadata(model, classes, normalization, transforms=None, csv=None) -> dict:
    """The str -> str metadata both export formats carry (labels, normalisation, head, the
    input transforms the file applies itself: {per_sequence, pool, frame}, and ``csv``: the
    training config's data.csv options that were set, which say which CSV columns, in
    which order, are the input's features; {} when none was)."""
    t = transforms or {}
    return {
        "format": "lstm_cli",
        "lstm_cli_version": __version__,
        "classes": json.dumps(list(classes)),
        "csv": json.dumps(csv or {}),
        "normalization": json.dumps(normalization),
        "head": model.head,
        "forget_bias": repr(float(model.forget_bias)),
        "num_layers": str(model.num_layers),
        "bidirectional": json.dumps(bool(model.bidirectional)),
        "hidden_size": str(model.hidden_size),
        "input_size": str(model.input_size),
        "num_classes": str(model.num_classes),
        "transforms": json.dumps(
            {
                "per_sequence": bool(t.get("per_sequence", False)),
                "pool": int(t.get("pool", 1)),
                "frame": int(t.get("frame", 1)),
            }
        ),
    }


SHARED_KEYS = ("format", "lstm_cli_version", "classes", "csv")


def ensemble_metadata(metas) -> dict:
    """The metadata of an ensemble file from its members' (each as export_metadata or a
    format's own version of it): the shared keys once, and ``members``, a JSON list of
    each member's other keys."""
    out = {k: metas[0][k] for k in SHARED_KEYS}
    out["members"] = json.dumps(
        [{k: v for k, v in m.items() if k not in SHARED_KEYS} for m in metas]
    )
    return out


def shared_csv(tms) -> dict | None:
    """The CSV options (TrainedModel.csv_options) every member of ``tms`` reads its data
    with, or a CheckpointError when they differ: an exported file has one input, whose
    features must mean the same columns to every member."""
    options = [tm.csv_options for tm in tms]
    if any(o != options[0] for o in options[1:]):
        raise CheckpointError(
            "the members read CSV data with different data.csv options "
            f"({', '.join(sorted({json.dumps(o) for o in options}))}); the members of an "
            "exported ensemble must read the same columns"
        )
    return options[0]


def raw_features(model, transforms) -> int:
    """The features of one raw input step: the model's input size before framing."""
    return model.input_size // (transforms or {}).get("frame", 1)


def members_raw_features(members) -> int:
    """The raw features per step every (model, transforms) member reads, or a
    CheckpointError when they differ (an ensemble file has one input)."""
    F = {raw_features(model, transforms) for model, transforms in members}
    if len(F) != 1:
        raise CheckpointError(
            f"the members read different numbers of features per step ({sorted(F)}); "
            "an ensemble's members must read the same input"
        )
    return F.pop()
