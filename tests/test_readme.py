"""The README's Python examples run as written (from the repository root)."""

import os
import re
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks():
    text = Path(ROOT, "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("n", range(len(_python_blocks())))
def test_readme_python_example_runs(n, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    exec(compile(_python_blocks()[n], f"README.md python block {n}", "exec"), {})
    out = capsys.readouterr().out
    if n == 0:
        assert "[0 1 2 1]" in out


def test_readme_names_the_two_commands():
    text = Path(ROOT, "README.md").read_text(encoding="utf-8")
    assert "pip install -e '.[test]' && python -m pytest" in text
    ci = Path(ROOT, ".ci", "run").read_text(encoding="utf-8")
    assert "pip install -e '.[test]' && python -m pytest" in ci
