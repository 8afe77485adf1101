"""lstm_cli.extras: a missing optional package is one error naming the extra to install."""

import pytest

from lstm_cli.errors import MissingExtraError
from lstm_cli.extras import require


def test_present_module_is_returned():
    import json

    assert require("json", "plot") is json


def test_missing_module_names_the_extra_and_the_install_command():
    with pytest.raises(MissingExtraError) as err:
        require("lstm_cli_no_such_module", "onnx", "lstm-export --to onnx")
    text = str(err.value)
    assert "lstm-export --to onnx needs the optional extra 'onnx'" in text
    assert "pip install 'lstm_cli[onnx]'" in text
    assert err.value.exit_code == 7


def test_unknown_extra_is_a_bug():
    with pytest.raises(ValueError, match="unknown extra"):
        require("json", "gpu")
