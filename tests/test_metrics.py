import numpy as np
import pytest

from lstm_cli.nn.metrics import classification_report, confusion_matrix


def test_confusion_matrix_counts():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_report_values_by_hand():
    r = classification_report([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], ["a", "b", "c"], loss=0.5)
    assert r["accuracy"] == pytest.approx(4 / 6)
    pa, pb, pc = r["per_class"]
    assert (pa["precision"], pa["recall"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert (pb["precision"], pb["recall"]) == (pytest.approx(0.5), pytest.approx(1.0))
    assert (pc["precision"], pc["recall"]) == (pytest.approx(1.0), pytest.approx(2 / 3))
    f1 = [0.5, 2 / 3, 0.8]
    assert r["macro_f1"] == pytest.approx(np.mean(f1))
    assert r["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 3 * 0.8) / 6)
    assert r["loss"] == 0.5 and r["labels"] == ["a", "b", "c"] and r["n"] == 6


def test_absent_class_does_not_divide_by_zero():
    r = classification_report([0, 0], [0, 0], ["x", "y"])
    assert r["per_class"][1] == {
        "label": "y",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    assert r["macro_f1"] == 1.0


def test_macro_f1_counts_a_class_that_is_only_predicted():
    """docs/cli.md: macro F1 averages over the classes in the labels or the predictions;
    a class predicted but absent from the labels (F1 0) lowers it."""
    r = classification_report([0, 0, 1], [0, 2, 1], ["a", "b", "c"])
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
