"""A trained model as a PyTorch ``nn.LSTM`` + ``nn.Linear`` state_dict in a safetensors file.

Keys are PyTorch's own names for a module with attributes ``lstm`` and ``fc``:
``lstm.weight_ih_l{k}`` (4H, I_k), ``lstm.weight_hh_l{k}`` (4H, H), ``lstm.bias_ih_l{k}``,
``lstm.bias_hh_l{k}`` (4H,) in PyTorch's gate order i, f, g, o (a bidirectional model adds
the same four with the suffix ``_reverse`` per layer, I_k = 2H above the first), then
``fc.weight`` (K, D*H) and ``fc.bias`` (K,). ``bias_ih`` is lstm_cli's bias b;
``forget_bias`` is folded into ``bias_hh``'s forget block (the rest of bias_hh is 0), so
PyTorch's bias_ih + bias_hh is exactly the forward of DESIGN §5, and ``lstm-import`` can
take the two apart again without rounding (an exact round trip). Arrays keep the model's dtype.

The file's metadata (str -> str) holds the labels, normalisation, head, forget_bias and
``module_args`` (JSON keyword arguments of ``PYTORCH_MODULE``'s class).

An ensemble (several TrainedModels) is one file of an ``Ensemble`` module: member i's keys
are prefixed ``members.{i}.``, ``module_args`` is the list of the members' arguments, and
the metadata is meta.ensemble_metadata of the members' (labels once, ``members``).
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import LstmCliError
from ..extras import require
from ..nn.interop import to_pytorch
from ..store.atomic import atomic_write
from .meta import (
    ensemble_metadata,
    export_metadata,
    members_raw_features,
    normalization_of,
    shared_csv,
)

PYTORCH_FORMAT = "lstm_cli.pytorch/1"

# The module that loads the file; printed by lstm-export, shown in docs/export.md and
# executed by tests/test_export.py (keep the three the same).
PYTORCH_MODULE = """\
import json, torch
from safetensors import safe_open
from safetensors.torch import load_file


class Classifier(torch.nn.Module):
    def __init__(
        self, input_size, hidden_size, num_layers, num_classes, head, mean, std,
        bidirectional=False, transforms=None,
    ):  # fmt: skip
        super().__init__()
        self.head, self.mean, self.std = head, mean, std  # lists of F floats, or None
        self.transforms = transforms or {}  # per_sequence, pool, frame: docs/data-formats.md
        self.lstm = torch.nn.LSTM(
            input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional
        )
        self.fc = torch.nn.Linear(hidden_size * (1 + bidirectional), num_classes)

    def prepare(self, x, lengths):  # the training run's input transforms, float64, padding 0
        valid = torch.arange(x.shape[1])[None, :, None] < lengths[:, None, None]
        x = torch.where(valid, x.double(), 0.0)
        if self.transforms.get("per_sequence"):  # each sequence's own z-score
            mean = x.sum(1, keepdim=True) / lengths[:, None, None]
            dev = torch.where(valid, x - mean, 0.0)
            n = lengths[:, None, None].double()
            var = (dev * dev).sum(1, keepdim=True) / n
            n_eps = n * torch.finfo(torch.float64).eps  # constant up to rounding: 0
            constant = var <= n_eps * var + (n_eps * mean.abs()) ** 2
            x = torch.where(constant, 0.0, dev / torch.where(constant, 1.0, var.sqrt()))
        for name in ("pool", "frame"):  # k steps -> their mean / one step of k*F features
            k = self.transforms.get(name, 1)
            if k > 1:
                x = torch.nn.functional.pad(x, (0, 0, 0, -x.shape[1] % k)).unflatten(1, (-1, k))
                n = (lengths[:, None] - k * torch.arange(x.shape[1])).clamp(1, k)
                x = x.sum(2) / n[..., None] if name == "pool" else x.flatten(2)
                lengths = (lengths + k - 1) // k
        return x, lengths

    def forward(self, x, lengths):  # x (B, T, F) raw features, lengths (B,) int64 -> probs (B, K)
        if self.transforms:
            x, lengths = self.prepare(x, lengths)
        if self.mean is not None:  # the training statistics in float64, as lstm_cli
            mean, std = (torch.tensor(s, dtype=torch.float64) for s in (self.mean, self.std))
            x = (x.double() - mean) / std
        x = x.to(self.fc.weight.dtype)
        pack = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, True, enforce_sorted=False)
        y, (h_n, _) = self.lstm(pack)
        if self.head == "last":  # the top layer's final state per direction, [h->, h<-]
            return self.fc(torch.cat(list(h_n[-1 - self.lstm.bidirectional :]), -1)).softmax(-1)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, True)  # (B, T', D*H), 0 past each end
        valid = torch.arange(y.shape[1])[None, :, None] < lengths[:, None, None]
        if self.head == "mean":
            return self.fc((y * valid).sum(1) / lengths[:, None]).softmax(-1)
        if self.head == "max":  # a padded step never holds the max
            return self.fc(y.masked_fill(~valid, float("-inf")).amax(1)).softmax(-1)
        return (self.fc(y).softmax(-1) * valid).sum(1) / lengths[:, None]


class Ensemble(torch.nn.Module):  # several Classifiers: the mean of their probabilities
    def __init__(self, members):  # a list of Classifier keyword arguments
        super().__init__()
        self.members = torch.nn.ModuleList(Classifier(**kwargs) for kwargs in members)

    def forward(self, x, lengths):
        return torch.stack([member(x, lengths) for member in self.members]).mean(0)


def load_classifier(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    args = json.loads(meta["module_args"])  # a list for an ensemble
    model = Ensemble(args) if isinstance(args, list) else Classifier(**args)
    state = load_file(path)
    for name, module in model.named_modules():  # a float64 model runs in float64
        if isinstance(module, Classifier):
            module.to(state[f"{name}.fc.weight" if name else "fc.weight"].dtype)
    model.load_state_dict(state)
    return model.eval(), json.loads(meta["classes"])
"""


def torch_state_dict(model) -> dict:
    """{PyTorch name: array} of an LSTMClassifier (see the module docstring), new arrays."""
    H = model.hidden_size
    raw = to_pytorch(model.params, forget_bias=0.0)  # b in bias_ih, bias_hh zero
    state = {}
    for k in range(model.num_layers):
        for d in ("", "_reverse")[: model.directions]:
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                state[f"lstm.{name}_l{k}{d}"] = np.ascontiguousarray(raw[f"{name}_l{k}{d}"])
            state[f"lstm.bias_hh_l{k}{d}"][H : 2 * H] = model.forget_bias  # order i, f, g, o
    state["fc.weight"] = np.ascontiguousarray(raw["head.weight"])
    state["fc.bias"] = np.ascontiguousarray(raw["head.bias"])
    return state


def _module_transforms(t) -> dict:
    """The Classifier's ``transforms`` argument: only the transforms that are on."""
    on = {"per_sequence": True} if t["per_sequence"] else {}
    return on | {k: t[k] for k in ("pool", "frame") if t[k] > 1}


def torch_metadata(model, classes, mean=None, std=None, transforms=None, csv=None) -> dict:
    """The safetensors metadata: export_metadata plus the module's keyword arguments."""
    norm = normalization_of(mean, std)
    meta = export_metadata(model, classes, norm, transforms, csv)
    meta["format"] = PYTORCH_FORMAT
    meta["module_args"] = json.dumps(
        {
            "input_size": model.input_size,
            "hidden_size": model.hidden_size,
            "num_layers": model.num_layers,
            "num_classes": model.num_classes,
            "head": model.head,
            "bidirectional": bool(model.bidirectional),
            "mean": None if norm is None else norm["mean"],
            "std": None if norm is None else norm["std"],
            "transforms": _module_transforms(json.loads(meta["transforms"])),
        }
    )
    return meta


def _sorted_header(data: bytes) -> bytes:
    """The safetensors file ``data`` with its JSON header's keys sorted, so that one model
    always exports to the same bytes (the library writes them in hash order). Tensor
    offsets count from the end of the header, so they stay valid; the header is padded
    with spaces to a multiple of 8 bytes, as the library pads it."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def export_pytorch(trained, path) -> None:
    """Write ``trained`` (an inference.TrainedModel, or a list of them: an ensemble) to
    ``path`` as safetensors, atomically."""
    st = require("safetensors.numpy", "safetensors", "lstm-export --to pytorch")
    members = trained if isinstance(trained, list) else [trained]
    csv = shared_csv(members)
    metas = [
        torch_metadata(tm.model, tm.classes, tm.mean, tm.std, tm.transforms, csv) for tm in members
    ]
    if len(members) == 1:
        state, meta = torch_state_dict(members[0].model), metas[0]
    else:
        members_raw_features([(tm.model, tm.transforms) for tm in members])
        state = {
            f"members.{i}.{name}": array
            for i, tm in enumerate(members)
            for name, array in torch_state_dict(tm.model).items()
        }
        meta = ensemble_metadata(metas)
        meta["module_args"] = json.dumps([json.loads(m["module_args"]) for m in metas])
    data = _sorted_header(st.save(state, metadata=meta))
    try:
        atomic_write(path, lambda fh: fh.write(data))
    except OSError as err:
        raise LstmCliError(f"cannot write {path}: {err.strerror or err}") from None
