"""The figures: one function per PNG, each taking checked data (see runfiles) and a path.

Every figure is sized for a laptop screen at 100 % (about 1000-1200 px wide at 100 dpi)
with fonts of at least 10 pt, and says in its title and axis labels what it shows.
matplotlib comes from ``pyplot()``, which loads the optional extra with the Agg backend.
"""

from __future__ import annotations

import math

import numpy as np

from ..diagnostics import by_step_subject, by_step_unit, layer_label
from ..errors import LstmCliError
from ..extras import require
from ..store.atomic import atomic_write

DPI = 100
_STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def pyplot(feature="lstm-plot"):
    """matplotlib.pyplot on the headless Agg backend, or MissingExtraError (extra 'plot')."""
    mpl = require("matplotlib", "plot", feature)
    mpl.use("Agg")
    plt = require("matplotlib.pyplot", "plot", feature)
    plt.rcParams.update(_STYLE)
    return plt


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def _series(rows, key):
    """(epochs, values) of ``key`` over the rows, a value that is null or not finite as NaN
    (a gap in its line, not a segment across it); None when no value is finite."""
    values = [r.get(key) for r in rows]
    if not any(_finite(v) for v in values):
        return None
    return [r["epoch"] for r in rows], [v if _finite(v) else math.nan for v in values]


def _save(plt, fig, path):
    """The figure as a PNG at ``path``, replaced atomically; a figure's name is ours, so an
    existing link or hard link there is replaced, never written through (store.atomic)."""
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI), follow_symlinks=False)
    except OSError as err:
        raise LstmCliError(f"{path}: cannot write the figure ({err.strerror or err})") from None
    finally:
        plt.close(fig)
    return path


def learning_curves(rows, best, path, title="Training run"):
    """Loss, accuracy and learning rate per epoch (metrics.jsonl rows); best: (epoch, metric)."""
    plt = pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
    for ax, what in zip(axes[:2], ("loss", "accuracy")):
        for split, style in (("train", "-"), ("val", "--")):
            series = _series(rows, f"{split}_{what}")
            if series:
                name = "training" if split == "train" else "validation"
                ax.plot(*series, style, marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy loss" if what == "loss" else "accuracy")
        ax.set_title(f"{what.capitalize()} per epoch")
    losses = [r[k] for r in rows for k in ("train_loss", "val_loss") if _finite(r.get(k))]
    if losses and min(losses) > 0:
        axes[0].set_yscale("log")
    lr = _series(rows, "lr")
    if lr:
        axes[2].plot(*lr, color="tab:green", marker="o", markersize=3, label="learning rate")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate")
    axes[2].set_title("Learning rate per epoch")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    epoch, metric = best
    if epoch is not None:
        for ax in axes:
            ax.axvline(epoch, color="tab:red", linestyle=":", label=f"best epoch {epoch}")
    for ax in axes:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.legend(loc="best")
    note = ""
    if metric is not None:
        note = f" (best.npz: {'highest' if 'accuracy' in metric else 'lowest'} {metric})"
    fig.suptitle(f"{title}: learning curves{note}")
    return _save(plt, fig, path)


def member_curves(members, path, title="Ensemble"):
    """Validation and training loss per epoch of each member of an ensemble on one pair
    of axes. members: (name, metrics.jsonl rows, best epoch or None) per member."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, rows, best) in enumerate(members):
        color = colors[i % len(colors)]
        for ax, key in zip(axes, ("val_loss", "train_loss")):
            series = _series(rows, key)
            if series:
                ax.plot(*series, color=color, label=name)
                if best is not None and ax is axes[0]:
                    at = [v for e, v in zip(*series) if e == best and _finite(v)]
                    if at:
                        ax.plot([best], at, "o", color=color, markersize=6)
    for ax, what in zip(axes, ("validation", "training")):
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy loss")
        ax.set_title(f"{what.capitalize()} loss per epoch")
        lines = [v for line in ax.get_lines() for v in line.get_ydata() if _finite(v)]
        if lines and min(lines) > 0:
            ax.set_yscale("log")
        if ax.get_lines():
            ax.legend(loc="best")
    fig.suptitle(f"{title}: members' learning curves (dots: each member's best.npz epoch)")
    return _save(plt, fig, path)


def _zero_floor(values) -> float:
    """Where exact zeros go on a log axis: a decade below the smallest positive value."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    return 10.0 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1.0


def _track(record):
    """(layer, direction or ""): a bidirectional model's records name their direction."""
    return record["layer"], record.get("direction", "")


def gradient_flow(records, path, max_epochs=5):
    """Mean |dL/dh_t| and |dL/dc_t| per step and per fraction of length, one row per layer
    (and direction, for a bidirectional model's records).

    The axes are logarithmic, so a norm that is exactly 0 (a float32 gradient that
    underflowed, far back in a long sequence) is drawn as a downward triangle at the
    bottom of its panel, a decade below the smallest positive norm, never dropped.
    """
    plt = pyplot()
    tracks = sorted({_track(r) for r in records})  # (layer, direction): a row each
    epochs = sorted({r["epoch"] for r in records})
    if len(epochs) > max_epochs:  # evenly spaced, always the first and the last
        pick = np.linspace(0, len(epochs) - 1, max_epochs).round().astype(int)
        epochs = [epochs[i] for i in sorted(set(pick))]
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(epochs)))
    fig, axes = plt.subplots(
        len(tracks), 2, figsize=(12, 1.0 + 3.6 * len(tracks)), layout="constrained", squeeze=False
    )
    panels = (  # x key, its scale, the two norms, x label, title
        ("step", 1, ("dh_norm", "dc_norm"), "time step t of the model's input", "by time step"),
        ("fraction", 100, ("dh_norm_by_fraction", "dc_norm_by_fraction"),
         "position in the sequence (% of its length)", "by fraction of length"),
    )  # fmt: skip
    for row, track in enumerate(tracks):
        by_epoch = {r["epoch"]: r for r in records if _track(r) == track}
        layer = track[0]
        shown = [(e, colour, by_epoch[e]) for e, colour in zip(epochs, colours) if e in by_epoch]
        any_zero = False
        for col, (xkey, scale, keys, xlabel, where) in enumerate(panels):
            ax = axes[row, col]
            floor = _zero_floor(
                [v for _, _, r in shown for key in keys for v in r[key] if v is not None]
            )
            for e, colour, r in shown:
                x = np.array(r[xkey], float) * scale
                for key, style in zip(keys, ("-", "--")):
                    y = np.array([np.nan if v is None else v for v in r[key]], float)
                    part = " (its batches after a resume)" if r.get("partial") else ""
                    label = f"epoch {e}{part}" if key.startswith("dh") else None
                    zero = y == 0
                    ax.plot(
                        x, np.where(zero, np.nan, y), style, color=colour, marker=".", label=label
                    )
                    if zero.any():
                        any_zero = True
                        ax.plot(x[zero], np.full(int(zero.sum()), floor), "v", color=colour)
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("mean gradient norm")
            ax.set_title(f"{_label(by_epoch[max(by_epoch)], layer)}: gradient norm {where}")
        handles, labels = axes[row, 0].get_legend_handles_labels()
        handles += [
            plt.Line2D([], [], color="grey", linestyle="-", label="|dL/dh_t| (solid)"),
            plt.Line2D([], [], color="grey", linestyle="--", label="|dL/dc_t| (dashed)"),
        ]
        if any_zero:
            handles.append(
                plt.Line2D(
                    [],
                    [],
                    color="grey",
                    linestyle="",
                    marker="v",
                    label="exactly 0 (at the bottom)",
                )
            )
        axes[row, 1].legend(handles=handles, loc="best")
    late = "; in a reverse direction, towards late ones" if any(d for _, d in tracks) else ""
    fig.suptitle(
        f"Gradient flow through time (vanishing gradient = a decay towards early steps{late})"
    )
    return _save(plt, fig, path)


def confusion_matrix(report, path, title="Confusion matrix"):
    """Counts and row-normalised (recall per true label) confusion matrices side by side."""
    plt = pyplot("lstm-eval --plot / lstm-plot --report")
    labels = [str(lbl) for lbl in report["labels"]]
    cm = np.array(report["confusion_matrix"], dtype=np.int64)
    k = len(labels)
    totals = cm.sum(1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    side = min(5.0, 2.5 + 0.4 * k)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side + 0.8), layout="constrained")
    for ax, data, panel, fmt in (  # panel, not title: the suptitle below is the caller's
        (axes[0], cm, "Counts", "d"),
        (axes[1], norm, "Row-normalised (each true label sums to 1)", ".2f"),
    ):
        im = ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() if data.max() > 0 else 1)
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_xticks(range(k), labels, rotation=45 if max(map(len, labels)) > 3 else 0)
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        ax.set_title(panel)
        ax.grid(False)
        if k <= 15:
            top = data.max() if data.max() > 0 else 1
            for i in range(k):
                for j in range(k):
                    colour = "white" if data[i, j] > 0.6 * top else "black"
                    text = format(data[i, j], fmt) if data[i, j] else "0"
                    ax.text(j, i, text, ha="center", va="center", color=colour)
    acc = np.trace(cm) / max(cm.sum(), 1)
    fig.suptitle(f"{title} on {cm.sum()} sequences (accuracy {acc:.3f})")
    return _save(plt, fig, path)


def accuracy_by_step(report, path):
    """Accuracy and loss when each sequence is cut at 10 %, ..., 100 % of its length."""
    plt = pyplot("lstm-eval --plot / lstm-plot --report")
    bs = report["by_step"]
    pct = bs["percent"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    axes[0].plot(pct, bs["accuracy"], marker="o", color="tab:blue", label="accuracy on the prefix")
    chance = 1.0 / max(len(report["labels"]), 1)
    axes[0].axhline(
        chance, color="grey", linestyle=":", label=f"chance (1/{len(report['labels'])})"
    )
    axes[0].set_ylim(0, 1.02)
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("Accuracy from the first p % of each sequence")
    axes[1].plot(pct, bs["loss"], marker="o", color="tab:orange", label="cross-entropy")
    axes[1].set_ylabel("cross-entropy loss")
    axes[1].set_title("Loss from the first p % of each sequence")
    for ax in axes:
        ax.set_xlabel("part of each sequence seen (% of its own length)")
        ax.set_xticks(pct)
        ax.legend(loc="best")
    steps = bs.get("mean_steps")
    extra = f"; on average {steps[0]:.1f} to {steps[-1]:.1f} {by_step_unit(bs)}" if steps else ""
    fig.suptitle(
        f"Early classification ({by_step_subject(bs)}, {bs.get('n', '?')} sequences{extra})"
    )
    return _save(plt, fig, path)


def _label(entry, row):
    """'Layer 2' or 'Layer 2 reverse' (diagnostics.layer_label), row-numbered if unnamed."""
    return layer_label({"layer": row, **entry}).capitalize()


def gate_saturation(report, path):
    """Per layer: histograms of the input/forget/output gate values and their saturation."""
    plt = pyplot("lstm-eval --plot / lstm-plot --report")
    gates = report["gates"]
    layers = gates["layers"]
    names = ("input", "forget", "output")
    colours = ("tab:blue", "tab:orange", "tab:green")
    high, low = gates.get("high", 0.95), gates.get("low", 0.05)
    fig, axes = plt.subplots(
        len(layers), 2, figsize=(12, 1.0 + 3.6 * len(layers)), layout="constrained", squeeze=False
    )
    for row, layer in enumerate(layers):
        ax = axes[row, 0]
        for name, colour in zip(names, colours):
            hist = np.asarray(layer[name]["histogram"], float)
            edges = np.linspace(0, 1, len(hist) + 1)
            share = hist / max(hist.sum(), 1)
            mean = layer[name]["mean"]
            ax.stairs(
                share, edges, color=colour, linewidth=2, label=f"{name} gate (mean {mean:.2f})"
            )
        for x in (low, high):
            ax.axvline(x, color="grey", linestyle=":")
        ax.set_xlabel("gate value (dotted: saturation thresholds)")
        ax.set_ylabel("share of values")
        ax.set_title(f"{_label(layer, row)}: distribution of gate values")
        ax.legend(loc="best")
        ax = axes[row, 1]
        x = np.arange(len(names))
        above = [layer[n]["above_0.95"] for n in names]
        below = [layer[n]["below_0.05"] for n in names]
        ax.bar(x - 0.2, below, 0.4, color="tab:purple", label=f"< {low} (closed)")
        ax.bar(x + 0.2, above, 0.4, color="tab:red", label=f"> {high} (open)")
        ax.set_xticks(x, [f"{n} gate" for n in names])
        ax.set_ylabel("fraction of gate values")
        ax.set_ylim(0, max(max(above + below) * 1.25, 0.05))
        ax.set_title(f"{_label(layer, row)}: saturated gate values")
        ax.legend(loc="best")
    fig.suptitle("LSTM gates over all valid time steps and units")
    return _save(plt, fig, path)
