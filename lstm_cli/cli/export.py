"""lstm-export and lstm-import: deployable files from a checkpoint, and back (docs/export.md)."""

from __future__ import annotations

import os

import click

from ..nn.spec import HEADS
from .common import CONTEXT, Command, FiniteFloat, handles_errors, refuse_output_over_input

# each --to's file name ending, and what the endings a user may reach for say the file is
_SUFFIX = {"onnx": ".onnx", "pytorch": ".safetensors"}
_NAME_SAYS = {
    ".onnx": "ONNX",
    ".safetensors": "safetensors",
    ".pt": "a pickle",
    ".pth": "a pickle",
    ".npz": "an lstm_cli checkpoint",
}
_TARGETS = tuple(_SUFFIX)


@click.command(
    name="lstm-export",
    cls=Command,
    context_settings=CONTEXT,
    epilog="Examples:\n\n  lstm-export runs/japanese_vowels/best.npz --to onnx model.onnx\n\n"
    "  lstm-export runs/japanese_vowels/best.npz --to pytorch model.safetensors\n\n"
    "  lstm-export runs/acsf1 --to onnx acsf1.onnx   (a train.folds ensemble)",
)
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--to",
    "target",
    type=click.Choice(_TARGETS),
    required=True,
    help="onnx: an ONNX graph (opset 17) with input transforms, normalisation, LSTM and "
    "head inside; "
    "pytorch: an nn.LSTM + nn.Linear state_dict as safetensors.",
)
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--quiet", is_flag=True, help="Print nothing (no summary, no PyTorch module).")
@handles_errors
def export(checkpoints, target, out, quiet):
    """Export the model in CHECKPOINTS to OUT (ONNX or PyTorch safetensors).

    A run folder stands for its best.npz. Several checkpoints, or a train.folds
    ensemble's folder, export as one file averaging the members' probabilities (as
    lstm-eval does): one ONNX graph, or one PyTorch Ensemble module.
    """
    from ..ensemble import check_members
    from ..inference import load_trained
    from .evaluate import checkpoint_files

    files = checkpoint_files(checkpoints)
    refuse_output_over_input([("OUT", out)], [("checkpoint", f) for f in files])
    said = _NAME_SAYS.get(os.path.splitext(out)[1].lower())
    if said is not None and said != _NAME_SAYS[_SUFFIX[target]]:
        raise click.BadParameter(
            f"{out}: --to {target} writes a {_SUFFIX[target]} file (the name says {said})",
            param_hint="OUT",
        )
    tms = [load_trained(f) for f in files]
    check_members(tms, files)
    tm = tms[0]
    if target == "onnx":
        from ..export.onnx_graph import ONNX_OPSET, export_onnx

        export_onnx(tms, out)
        raw = tm.num_features // tm.transforms["frame"]  # the graph frames the raw steps itself
        what = f"ONNX (opset {ONNX_OPSET}; inputs x (batch, time, {raw}) float32"
        what += ", lengths (batch,) int64)"
        if len(tms) > 1:
            what += f", the mean of {len(tms)} members' probabilities; the first member"
    else:
        from ..export.torch_state import PYTORCH_MODULE, export_pytorch

        export_pytorch(tms, out)
        what = "a PyTorch nn.LSTM + nn.Linear state_dict (safetensors)"
        if len(tms) > 1:
            what = f"a PyTorch Ensemble of {len(tms)} nn.LSTM + nn.Linear members (safetensors)"
            what += ", the mean of their probabilities; the first member"
        if not quiet:
            click.echo("# Load it in PyTorch with:  model, classes = load_classifier(path)")
            click.echo(PYTORCH_MODULE, nl=False)
    if not quiet:
        m = tm.model
        click.echo(
            f"wrote {out}: {what}{':' if len(tms) > 1 else ';'} {m.num_layers} "
            f"{'bidirectional ' if m.bidirectional else ''}layer(s) of {m.hidden_size}, head "
            f"{m.head!r}, {m.num_classes} classes",
            err=True,
        )


def _split_list(text, name, number=False):
    """A comma-separated option value as a list (floats with number=True), or None."""
    if text is None:
        return None
    items = [s.strip() for s in text.split(",")]
    if not all(items):
        raise click.BadParameter(f"{text!r} has an empty item", param_hint=name)
    if not number:
        return items
    try:
        return [float(s) for s in items]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of numbers", param_hint=name) from None


def _read_meta_yaml(path) -> dict:
    """The --meta file: a YAML mapping with keys among SETTING_KEYS (read with the config's
    safe loader: yaml.safe_load plus duplicate-key checks)."""
    from ..config.yaml_safe import load_yaml
    from ..errors import ConfigError
    from ..export.checkpoint_from_state import SETTING_KEYS

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    doc = load_yaml(text, path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping ({', '.join(SETTING_KEYS)})")
    unknown = sorted(map(str, set(doc) - set(SETTING_KEYS)))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; expected keys among {SETTING_KEYS}")
    return doc


@click.command(
    name="lstm-import",
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: lstm-import model.safetensors --classes neg,pos --mean 0.1,2 --std 1,0.5 "
    "imported.npz",
)
@click.argument("state", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--classes", help="Labels in class-index order, comma-separated (e.g. neg,pos).")
@click.option("--mean", help="Per-feature normalisation mean, comma-separated.")
@click.option("--std", help="Per-feature normalisation std, comma-separated (with --mean).")
@click.option("--head", type=click.Choice(HEADS), help="The model's head.")
@click.option(
    "--forget-bias", type=FiniteFloat(), help="forget_bias to take out of the forget bias."
)
@click.option(
    "--bidirectional/--unidirectional",
    default=None,
    help="Whether STATE is a bidirectional nn.LSTM (default: its metadata, else its keys: "
    "'*_reverse' keys mean bidirectional).",
)
@click.option(
    "--meta",
    "meta_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A small YAML with classes, normalization {mean, std}, head, forget_bias, "
    "bidirectional, transforms {per_sequence, pool, frame}, csv (data.csv options).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace OUT when it is an existing .npz file (never a run folder's own file).",
)
@click.option("--quiet", is_flag=True, help="No summary line on stderr.")
@handles_errors
def import_(
    state, out, classes, mean, std, head, forget_bias, bidirectional, meta_path, overwrite, quiet
):
    """Turn a PyTorch nn.LSTM + nn.Linear state_dict (STATE, safetensors) into the lstm_cli
    checkpoint OUT that lstm-eval and lstm-predict accept.

    Labels, normalisation, head and forget_bias: the options win over --meta, which wins
    over STATE's own metadata (present when lstm-export wrote it)."""
    from ..export.checkpoint_from_state import checkpoint_from_state
    from ..store.checkpoint import save_checkpoint

    if (mean is None) != (std is None):
        raise click.UsageError("--mean and --std go together")
    inputs = [("state_dict", state)] + ([("--meta file", meta_path)] if meta_path else [])
    refuse_output_over_input([("OUT", out)], inputs, overwrite)
    settings = _read_meta_yaml(meta_path) if meta_path else {}
    sources = dict.fromkeys(settings, meta_path)
    given = {
        "--classes": ("classes", _split_list(classes, "--classes")),
        "--head": ("head", head),
        "--forget-bias": ("forget_bias", forget_bias),
        "--bidirectional/--unidirectional": ("bidirectional", bidirectional),
    }
    if mean is not None:
        norm = {"mean": _split_list(mean, "--mean", True), "std": _split_list(std, "--std", True)}
        given["--mean/--std"] = ("normalization", norm)
    for option, (key, value) in given.items():
        if value is not None:  # the command line wins; its errors name the option
            settings[key], sources[key] = value, option
    params, meta = checkpoint_from_state(state, settings, sources)
    save_checkpoint(out, params, meta)
    if not quiet:
        spec = meta["model"]
        click.echo(
            f"wrote {out}: {spec['num_layers']} "
            f"{'bidirectional ' if spec.get('bidirectional') else ''}layer(s) of "
            f"{spec['hidden_size']}, head "
            f"{spec['head']!r}, classes {meta['classes']} (from {os.path.basename(state)})",
            err=True,
        )


if __name__ == "__main__":  # python -m lstm_cli.cli.export: as the console script
    export()
