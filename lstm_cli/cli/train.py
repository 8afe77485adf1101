"""lstm-train: train as a YAML config describes, or resume a run."""

from __future__ import annotations

import os

import click

from .common import CONTEXT, Command, handles_errors


class _TrainCommand(Command):
    """click's command, whose "unexpected extra argument" names --config when the stray
    argument is a YAML file (``lstm-train configs/x.yaml`` is an easy slip)."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            # click: "Got unexpected extra argument(s) (a b)": the strays in the parentheses
            strays = err.message.rpartition("(")[2].rstrip(")").split()
            yaml_file = next((a for a in strays if a.lower().endswith((".yaml", ".yml"))), None)
            if "unexpected extra argument" in err.message and yaml_file is not None:
                err.message += f"; a config is given as --config {yaml_file}"
            raise


@click.command(
    cls=_TrainCommand,
    context_settings=CONTEXT,
    epilog="Examples:\n\n  lstm-train --config configs/japanese_vowels.yaml\n\n"
    "  lstm-train --config configs/synthetic.yaml --set model.head=all "
    "--set train.optimizer.lr=0.003 --output runs/try2\n\n"
    "  lstm-train --resume runs/japanese_vowels --set train.epochs=80",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML config (see configs/reference.yaml).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set train.optimizer.lr=0.01 (repeatable).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder (overrides output.dir).",
)
@click.option("--overwrite", is_flag=True, help="Replace the files of a non-empty run folder.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Continue the run in this folder from its last.npz.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, None),
    default=1,
    show_default=True,
    help="With train.folds: train this many members at a time, each in its own process "
    "(same result; no progress bars, each member's lines prefixed with its fold). One "
    "model trains in this process whatever --jobs says.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-epoch lines.")
@handles_errors
def train(config_path, overrides, output, overwrite, resume_dir, jobs, print_config, quiet):
    """Train an LSTM sequence classifier as a YAML config describes.

    Writes config.yaml, metrics.jsonl, metrics.csv, last.npz, best.npz and summary.json
    to the run folder (output.dir, or --output); with train.folds K, one such folder per
    member (fold-0 ... fold-K-1) and the ensemble's config.yaml and summary.json.
    """
    import dataclasses

    from ..config import OutputConfig, dump_config, load_config, override_key, value_origin
    from ..training import config_for_resume, fit, fit_folds, fmt_metric, is_ensemble
    from ..training.distributed import launched_rank, starts_mpi

    starts_mpi()  # under mpiexec: an error on one rank must end the others' MPI_Init too
    if config_path is None and resume_dir is None:
        raise click.UsageError("give --config FILE (or --resume RUN_DIR)")
    if resume_dir is not None and output is not None:
        raise click.UsageError("--resume RUN_DIR already names the run folder; drop --output")
    if resume_dir is not None and any(override_key(o) == "output.dir" for o in overrides):
        raise click.UsageError(
            "--resume RUN_DIR already names the run folder; drop --set output.dir"
        )
    if resume_dir is not None and overwrite:
        raise click.UsageError("--resume and --overwrite cannot be used together")
    if config_path is not None:
        cfg = load_config(config_path, overrides)
    else:
        cfg = config_for_resume(resume_dir, overrides)
    out_dir = resume_dir or output
    if out_dir is not None:
        cfg = dataclasses.replace(cfg, output=OutputConfig(dir=out_dir))
    if print_config:
        if launched_rank() == 0:  # under mpiexec: once
            click.echo(dump_config(cfg), nl=False)
        return
    if jobs > 1 and not is_ensemble(cfg) and not quiet and launched_rank() == 0:
        # one model: nothing to run beside it (said once, not by every MPI rank)
        click.echo(f"--jobs {jobs}: one model (no train.folds), trained in this process", err=True)
    source = config_path or os.path.join(
        resume_dir, "config.yaml" if is_ensemble(cfg) else "last.npz"
    )
    parallel = {"jobs": jobs} if is_ensemble(cfg) else {}
    result = (fit_folds if is_ensemble(cfg) else fit)(
        cfg,
        **parallel,
        overwrite=overwrite,
        resume=resume_dir is not None,
        progress=not quiet,
        log=(lambda *_: None) if quiet else click.echo,
        source=value_origin("train.class_weights", source, overrides),
    )
    if result is None or result.rank != 0:  # a rank left idle (training.fit), or not 0
        return
    if is_ensemble(cfg):
        oof = result.summary["out_of_fold"]
        click.echo(
            f"ensemble of {cfg.train.folds}: out-of-fold accuracy {oof['accuracy']:.4f} loss "
            f"{oof['loss']:.4f}; evaluate it with lstm-eval {result.run_dir} --data FILE"
        )
        return
    best = result.history[result.best_epoch - 1] if result.best_epoch else None
    if best is not None:
        # without validation the best epoch is the one of lowest training loss
        split = "train" if best["val_loss"] is None else "val"
        click.echo(
            f"best epoch {result.best_epoch}: {split} loss {fmt_metric(best[f'{split}_loss'])} "
            f"{split} acc {fmt_metric(best[f'{split}_accuracy'], '.4f')}; checkpoints in "
            f"{result.run_dir}"
        )


if __name__ == "__main__":  # python -m lstm_cli.cli.train: as the console script
    train()
