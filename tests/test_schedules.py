"""Learning-rate warm-up (train.schedule.warmup_epochs) composed with every schedule."""

import json
import math

import numpy as np
import pytest

from lstm_cli.config import load_config
from lstm_cli.errors import LstmCliError
from lstm_cli.nn.schedules import SCHEDULES, LRSchedule
from lstm_cli.store.checkpoint import load_checkpoint
from lstm_cli.training import fit


def _plain(name):
    return LRSchedule(name, 0.1, epochs=10, step_size=2, gamma=0.5, min_lr=0.01)


@pytest.mark.parametrize("name", SCHEDULES)
def test_warmup_ramps_linearly_then_follows_the_schedule(name):
    plain, warm = (
        _plain(name),
        LRSchedule(name, 0.1, epochs=10, step_size=2, gamma=0.5, min_lr=0.01, warmup_epochs=3),
    )
    for epoch in range(10):
        factor = (epoch + 1) / 4 if epoch < 3 else 1.0  # lr/(W+1), 2 lr/(W+1), ..., lr
        assert warm.lr_for_epoch(epoch) == pytest.approx(plain.lr_for_epoch(epoch) * factor)
    assert warm.lr_for_epoch(0) == pytest.approx(plain.lr_for_epoch(0) / 4)
    assert warm.lr_for_epoch(3) == plain.lr_for_epoch(3)


def test_warmup_values_by_hand():
    s = LRSchedule("cosine", 0.2, epochs=4, warmup_epochs=1)
    assert s.lr_for_epoch(0) == pytest.approx(0.1)  # 0.2 * (1 + cos 0) / 2 * 1/2
    assert s.lr_for_epoch(1) == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)) / 2)
    c = LRSchedule("constant", 0.3, epochs=5, warmup_epochs=2)
    assert [c.lr_for_epoch(e) for e in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])


def test_plateau_with_warmup_scales_the_reduced_lr():
    s = LRSchedule("plateau", 1.0, epochs=10, patience=1, factor=0.5, warmup_epochs=3)
    s.observe(1.0)
    s.observe(2.0)  # no improvement: lr 0.5
    assert s.lr_for_epoch(1) == pytest.approx(0.5 * 2 / 4)
    assert s.lr_for_epoch(5) == pytest.approx(0.5)


def test_warmup_zero_is_the_plain_schedule_and_negative_is_refused():
    for name in SCHEDULES:
        plain, zero = _plain(name), LRSchedule(name, 0.1, 10, 2, 0.5, 0.01, warmup_epochs=0)
        assert [plain.lr_for_epoch(e) for e in range(10)] == [
            zero.lr_for_epoch(e) for e in range(10)
        ]
    with pytest.raises(LstmCliError, match="warmup_epochs"):
        LRSchedule("constant", 0.1, 10, warmup_epochs=-1)


def test_warmup_is_in_the_state_and_survives_a_round_trip():
    s = LRSchedule("plateau", 1.0, epochs=10, patience=1, warmup_epochs=2)
    s.observe(1.0)
    s.observe(3.0)
    state = json.loads(json.dumps(s.state_dict()))
    assert state["warmup_epochs"] == 2
    t = LRSchedule("plateau", 1.0, epochs=10, patience=1, warmup_epochs=2)
    t.load_state_dict(state)
    assert [t.lr_for_epoch(e) for e in range(4)] == [s.lr_for_epoch(e) for e in range(4)]


def _fit(path, *overrides, **kw):
    return fit(load_config(path, overrides), progress=False, log=lambda *a: None, **kw)


def test_training_uses_the_warmup_and_resumes_bit_exactly(write_config, tmp_path):
    # step, not cosine: cosine's lr depends on train.epochs, which the resume changes
    sched = {"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 3}
    train = {"epochs": 5, "batch_size": 16, "optimizer": {"lr": 0.01}, "schedule": sched}
    cfg = write_config(train=train)
    full = _fit(cfg, f"output.dir={tmp_path / 'full'}")
    lrs = [row["lr"] for row in full.history]
    want = LRSchedule("step", 0.01, epochs=5, step_size=2, warmup_epochs=3)
    assert lrs == pytest.approx([want.lr_for_epoch(e) for e in range(5)])
    assert lrs[0] == pytest.approx(0.01 / 4)
    _fit(cfg, "train.epochs=2", f"output.dir={tmp_path / 'part'}")  # stops inside the warm-up
    _fit(cfg, f"output.dir={tmp_path / 'part'}", resume=True)
    a = load_checkpoint(str(tmp_path / "full" / "last.npz"))
    b = load_checkpoint(str(tmp_path / "part" / "last.npz"))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    for k in a.optim_arrays:
        np.testing.assert_array_equal(a.optim_arrays[k], b.optim_arrays[k])
