"""The metadata both export formats carry: labels, normalisation and the architecture."""

from __future__ import annotations

import dataclasses
import json

from .. import __version__
from ..config.schema import CsvConfig
from ..errors import CheckpointError


def normalization_of(mean, std) -> dict | None:
    """The training statistics as the files carry them: {"mean": [...], "std": [...]}."""
    return None if mean is None else {"mean": list(map(float, mean)), "std": list(map(float, std))}


def export_metadata(model, classes, normalization, transforms=None, csv=None) -> dict:
    """The str -> str metadata both export formats carry (labels, normalisation, head, the
    input transforms the file applies itself: {per_sequence, pool, frame}, and ``csv``: the
    data.csv options the model reads data with (shared_csv), which say which CSV columns,
    in which order, are the input's features)."""
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


def shared_csv(tms) -> dict:
    """The CSV options the members of ``tms`` read their data with (TrainedModel.
    csv_options, with the schema's defaults where a checkpoint has none), or a
    CheckpointError when two members give one option different values: an exported file
    has one input, whose features must mean the same columns to every member. No
    feature_columns (a model not trained on CSV, or from before runs recorded them) is a
    value of its own: which columns such a member read is not known."""
    defaults = dataclasses.asdict(CsvConfig())
    shared: dict = {}
    for tm in tms:
        for key, value in {**defaults, **(tm.csv_options or {})}.items():
            if shared.setdefault(key, value) != value:
                raise CheckpointError(
                    f"the members read CSV data with different data.csv.{key} "
                    f"({json.dumps(shared[key])}, {json.dumps(value)}); the members of an "
                    "exported ensemble must read the same columns"
                )
    return shared


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
