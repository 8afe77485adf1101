"""The metadata both export formats carry: labels, normalisation and the architecture."""

from __future__ import annotations

import json

from .. import __version__


def export_metadata(model, classes, normalization, transforms=None) -> dict:
    """The str -> str metadata both export formats carry (labels, normalisation, head, and
    the input transforms the file applies itself: {per_sequence, pool, frame})."""
    t = transforms or {}
    return {
        "format": "lstm_cli",
        "lstm_cli_version": __version__,
        "classes": json.dumps(list(classes)),
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
