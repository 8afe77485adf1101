"""lstm_cli.training.distributed: launcher detection, shards, the flat buffer, sync check."""

import subprocess
import sys

import numpy as np
import pytest

from lstm_cli.errors import TrainingError
from lstm_cli.training.distributed import (
    FlatBuffer,
    SingleProcess,
    check_in_sync,
    launched_size,
    make_comm,
    params_digest,
    split_batch,
)


@pytest.mark.parametrize(
    "environ, size",
    [
        ({}, 1),
        ({"PMI_SIZE": "4"}, 4),
        ({"OMPI_COMM_WORLD_SIZE": "3"}, 3),
        ({"PMI_SIZE": "1"}, 1),
        ({"PMI_SIZE": "x"}, 1),
        ({"PMI_SIZE": ""}, 1),
    ],
)
def test_launched_size(environ, size):
    assert launched_size(environ) == size


def test_one_process_imports_no_mpi():
    code = (
        "import os, sys; [os.environ.pop(k, None) for k in ('PMI_SIZE', 'OMPI_COMM_WORLD_SIZE')];"
        "from lstm_cli.training.distributed import make_comm;"
        "c = make_comm(); assert c.size == 1 and c.rank == 0;"
        "assert 'mpi4py' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_split_batch_covers_every_sequence_once_in_batch_order(parts):
    rng = np.random.default_rng(parts)
    lengths = rng.integers(1, 200, size=50)
    idx = rng.permutation(50)[:37]
    shards = split_batch(idx, lengths, parts)
    assert len(shards) == parts
    joined = np.concatenate(shards)
    assert sorted(joined.tolist()) == sorted(idx.tolist())
    position = {int(v): p for p, v in enumerate(idx)}
    for shard in shards:  # each shard keeps the batch's own order
        assert [position[int(v)] for v in shard] == sorted(position[int(v)] for v in shard)
    loads = [int(lengths[s].sum()) for s in shards]
    assert max(loads) - min(loads) <= lengths[idx].max()  # greedy longest-first bound


def test_split_batch_smaller_than_parts_leaves_empty_shards():
    shards = split_batch(np.array([4, 1]), np.arange(1, 10), 3)
    assert [s.tolist() for s in shards] == [[4], [1], []]


def test_split_batch_is_deterministic():
    lengths = np.full(10, 7)  # all ties: lowest shard first
    a = split_batch(np.arange(10), lengths, 3)
    b = split_batch(np.arange(10), lengths, 3)
    assert all((x == y).all() for x, y in zip(a, b))
    assert [s.tolist() for s in a] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


def test_flat_buffer_round_trip():
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=5)}
    fb = FlatBuffer({k: v.shape for k, v in arrays.items()}, ("loss", "correct"))
    buf = fb.pack(arrays, {"loss": 1.5, "correct": 7})
    assert buf.shape == (12 + 5 + 2,)
    back, scalars = fb.unpack(buf, np.float32)
    np.testing.assert_array_equal(back["a"], arrays["a"])
    np.testing.assert_array_equal(back["b"], arrays["b"].astype(np.float32))
    assert scalars == {"loss": 1.5, "correct": 7.0}


def test_params_digest_sees_one_bit():
    p = {"w": np.zeros(4, np.float32)}
    q = {"w": np.zeros(4, np.float32)}
    q["w"].view(np.uint32)[2] = 1  # the smallest subnormal
    assert params_digest(p) != params_digest(q)
    assert params_digest(p) == params_digest({"w": np.zeros(4, np.float32)})


class _FakeComm(SingleProcess):
    def __init__(self, digests):
        self.size, self.digests = len(digests), digests

    def allgather(self, obj):
        return self.digests


def test_check_in_sync_names_the_ranks_that_differ():
    p = {"w": np.ones(2)}
    d = params_digest(p)
    check_in_sync(_FakeComm([d, d, d]), p, epoch=1)
    with pytest.raises(TrainingError, match=r"epoch 3 .* rank\(s\) \[2\] differ"):
        check_in_sync(_FakeComm([d, d, "x"]), p, epoch=3)


def test_make_comm_without_mpi4py_names_the_extra(monkeypatch):
    import lstm_cli.training.distributed as dist
    from lstm_cli.errors import MissingExtraError

    monkeypatch.setenv("PMI_SIZE", "2")

    def missing(module, extra, feature=None):
        raise MissingExtraError(f"{feature} needs the optional extra {extra!r}")

    monkeypatch.setattr(dist, "require", missing)
    with pytest.raises(MissingExtraError, match="'mpi'"):
        make_comm()


def test_every_rank_forgets_the_earlier_run_with_the_first_checkpoint(write_config, tmp_path):
    """Only rank 0 writes, but every rank must agree that an --overwrite's earlier run is
    gone once the first checkpoint is written: a rank that still held it would, on a later
    signal, stop at once ("earlier run untouched") without waiting for rank 0's save."""
    from lstm_cli.config import load_config
    from lstm_cli.training import Trainer, prepare_data
    from lstm_cli.training.prepare import run_rng

    class Rank1(SingleProcess):
        rank, size = 1, 2

    cfg = load_config(write_config())
    rng = run_rng(cfg)
    trainer = Trainer(cfg, prepare_data(cfg, rng), rng, comm=Rank1())
    trainer.earlier_run, trainer.config_pending = ["best.npz"], True
    trainer.save_last()  # rank 1's part of a checkpoint: writes nothing
    assert trainer.earlier_run == [] and not trainer.config_pending
    assert not (tmp_path / "run").exists()
