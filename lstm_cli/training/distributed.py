"""Data-parallel training over MPI (docs/design.md §9): one communicator, shards, one Allreduce.

P processes hold the same parameters and draw the same random numbers (same seed), so
they form the same global batches in the same order as one process. Each global batch is
split into P shards by ``split_batch``; each rank computes the gradient of its shard's
share of the batch loss (weighted so the shares sum to the one-process loss), the shares
are summed with one Allreduce of one flat buffer, and every rank applies the identical
optimizer step. Rank 0 alone writes files and shows progress.

``make_comm()`` returns ``SingleProcess`` (no MPI imported) unless a launcher started more
than one process; then mpi4py is required (the ``mpi`` extra).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import time
from collections.abc import Mapping

import numpy as np

from ..errors import TrainingError
from ..extras import require

# Environment variables through which MPI launchers announce the job's size:
# MPICH/Hydra, Intel MPI and SLURM's PMI (PMI_SIZE), Open MPI (OMPI_COMM_WORLD_SIZE),
# PMIx launchers (PMIX_SIZE is not standard; OMPI_* covers Open MPI's PMIx).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
# how long a rank other than 0 waits before reporting its error and ending the job, so
# that an error every rank meets is reported once, by rank 0
REPORT_DELAY_S = 0.5
# how long a failing rank waits after its report before MPI_Abort, so the launcher has
# forwarded the report before it tears the job down
FORWARD_DELAY_S = 0.2


def _launcher_value(names, environ, default):
    for name in names:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return default


def launched_size(environ: Mapping[str, str] = os.environ) -> int:
    """The number of processes a launcher started this one among; 1 when none did."""
    return max(1, _launcher_value(SIZE_VARIABLES, environ, 1))


def launched_rank(environ: Mapping[str, str] = os.environ) -> int:
    """This process's rank as its launcher announced it; 0 when none did."""
    return _launcher_value(RANK_VARIABLES, environ, 0)


_STARTS_MPI = []  # non-empty once the command has said it starts MPI (starts_mpi)


def starts_mpi() -> None:
    """Mark this process's command as one that starts MPI under a launcher (lstm-train):
    an error one rank meets before MPI has started must still end the job, whose other
    ranks are on their way into MPI_Init (end_job_on_error)."""
    _STARTS_MPI.append(True)


def end_job_on_error(exit_code: int, report, agreed: bool = False) -> None:
    """Report an error and, under MPI, end every rank of the job with ``exit_code``.

    agreed: every rank stops at this same point (a signal the ranks agreed on): rank 0
    reports and nobody aborts. Otherwise a rank blocked in a collective would wait forever
    for the one that failed, so the job is ended with MPI_Abort: rank 0 reports at once;
    the others wait REPORT_DELAY_S first (rank 0's Abort usually ends them before they
    print), so an error all ranks meet is reported once. A command that starts MPI
    (starts_mpi) starts it here if it has not yet, to abort: the other ranks may be
    waiting in MPI_Init for this one. A command that never starts it (lstm-eval) does not
    (MPI_Init would wait for ranks that never call it): no rank waits for another, rank 0
    reports and nobody aborts; so, too, when mpi4py is missing."""
    if launched_size() <= 1:
        report()
        return
    rank = launched_rank()
    if agreed:
        if rank == 0:
            report()
        return
    mpi = sys.modules.get("mpi4py.MPI")  # imported, so started, by make_comm
    if mpi is None and _STARTS_MPI:
        try:
            mpi = importlib.import_module("mpi4py.MPI")
        except ImportError:
            mpi = None
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        if rank == 0:
            report()
        return
    if rank != 0:
        time.sleep(REPORT_DELAY_S)
    report()
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(FORWARD_DELAY_S)  # the launcher forwards output asynchronously
    mpi.COMM_WORLD.Abort(exit_code)


# Below this many (sequence x hidden unit) rows of work per process and step, splitting a
# batch costs more (per-step overhead of every process, the Allreduce) than it saves.
MIN_SHARD_WORK = 1024


def worth_splitting(cfg, size: int) -> bool:
    """Whether ``size`` processes should split cfg's batches (else one process trains)."""
    if cfg.train.distributed == "always":
        return True
    directions = 2 if cfg.model.bidirectional else 1
    return cfg.train.batch_size / size * cfg.model.hidden_size * directions >= MIN_SHARD_WORK


class SingleProcess:
    """The communicator of a run in one process: every collective is the identity."""

    rank = 0
    size = 1

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def bcast(self, obj, root: int = 0):
        return obj

    def allgather(self, obj) -> list:
        return [obj]


class MpiComm(SingleProcess):
    """MPI.COMM_WORLD behind the same calls."""

    def __init__(self, comm, mpi):
        self._comm, self._mpi = comm, mpi
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        out = np.empty_like(buf)
        self._comm.Allreduce(buf, out, op=self._mpi.SUM)
        return out

    def bcast(self, obj, root: int = 0):
        return self._comm.bcast(obj, root=root)

    def allgather(self, obj) -> list:
        return self._comm.allgather(obj)


def rank_output(comm, progress, log):
    """(progress, log) of this rank: the caller's on rank 0; off on every other rank, which
    prints nothing but errors (docs/distributed.md)."""
    return (progress, log) if comm.rank == 0 else (False, _silent)


def _silent(*_args) -> None:
    """The log of a rank other than 0."""


def make_comm():
    """SingleProcess, or MpiComm when a launcher started more than one process."""
    if launched_size() <= 1:
        return SingleProcess()
    mpi = require("mpi4py.MPI", "mpi", "training under mpiexec with more than one process")
    return MpiComm(mpi.COMM_WORLD, mpi)


def split_batch(idx: np.ndarray, lengths: np.ndarray, parts: int) -> list[np.ndarray]:
    """Split a batch's sequence indices ``idx`` (B,) into ``parts`` shards of similar work.

    Longest sequences first, each goes to the shard with the fewest steps so far (the lowest
    shard on ties); each shard keeps the batch's own order. Deterministic, so every rank
    computes the same split. A batch smaller than ``parts`` leaves some shards empty.
    """
    idx = np.asarray(idx)
    steps = np.asarray(lengths)[idx].astype(np.int64)  # (B,)
    owner = np.empty(len(idx), np.int64)
    load = np.zeros(parts, np.int64)
    for pos in np.argsort(-steps, kind="stable"):
        r = int(np.argmin(load))
        owner[pos] = r
        load[r] += steps[pos]
    return [idx[owner == r] for r in range(parts)]


class FlatBuffer:
    """Packs a dict of arrays plus a few scalars into one float64 vector and back.

    One Allreduce of this vector sums every gradient and every metric sum at once.
    """

    def __init__(self, shapes: Mapping[str, tuple], scalars: tuple[str, ...]):
        self.shapes = dict(shapes)
        self.scalars = tuple(scalars)
        self.sizes = {k: int(np.prod(s)) for k, s in self.shapes.items()}
        self.array_length = sum(self.sizes.values())  # the arrays come first, then the scalars
        self.length = self.array_length + len(self.scalars)

    def pack(self, arrays: Mapping[str, np.ndarray], scalars: Mapping[str, float]) -> np.ndarray:
        buf = np.empty(self.length)  # (n,)
        at = 0
        for k, n in self.sizes.items():
            buf[at : at + n] = arrays[k].ravel()
            at += n
        for name in self.scalars:
            buf[at] = scalars[name]
            at += 1
        return buf

    def unpack(self, buf: np.ndarray, dtype) -> tuple[dict, dict]:
        arrays, at = {}, 0
        for k, n in self.sizes.items():
            arrays[k] = buf[at : at + n].reshape(self.shapes[k]).astype(dtype)
            at += n
        scalars = {name: float(buf[at + i]) for i, name in enumerate(self.scalars)}
        return arrays, scalars


def rows_by_shard(comm, ds, y, compute, num_classes):
    """``compute(ds, y)`` -> (losses (N,), probs (N, K)), run by each rank on its shard of
    ``ds`` and assembled with one Allreduce (each value comes from exactly one rank, so
    the sum adds only zeros to it); one process computes it whole."""
    if comm.size == 1:
        return compute(ds, y)
    N, K = len(ds), num_classes
    mine = split_batch(np.arange(N), ds.lengths, comm.size)[comm.rank]
    out = np.zeros(N * (K + 1))  # losses, then probabilities row by row
    if len(mine):
        losses, probs = compute(ds.view(mine), y[mine])
        out[mine] = losses
        out[N:].reshape(N, K)[mine] = probs
    out = comm.allreduce_sum(out)
    return out[:N], out[N:].reshape(N, K)


def params_digest(params: Mapping[str, np.ndarray]) -> str:
    """sha256 over the parameters' names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_in_sync(comm, params: Mapping[str, np.ndarray], epoch: int) -> None:
    """TrainingError when the ranks' parameters differ (they must stay identical)."""
    if comm.size == 1:
        return
    digests = comm.allgather(params_digest(params))
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise TrainingError(
            f"after epoch {epoch} the parameters of rank(s) {differ} differ from rank 0's; "
            "the processes no longer compute the same run (different library versions or "
            "BLAS builds across hosts?)"
        )
