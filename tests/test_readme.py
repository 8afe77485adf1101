"""The README's and docs/*.md's examples run as written (from the repository root), and
their relative links point at files that exist."""

import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = ["README.md", "CONTRIBUTING.md"] + sorted(
    f"docs/{p.name}" for p in Path(ROOT, "docs").glob("*.md")
)
TEST_COMMAND = "pip install -e '.[test]' && python -m pytest"
# the quick start's training command: installs, then trains on a dataset shipped in data/
TRAIN_COMMAND = "pip install -e . && lstm-train --config configs/japanese_vowels.yaml"
# outputs a block must print, keyed by (file, python block index)
EXPECTED_OUTPUT = {("docs/python-api.md", 0): "[0 1 2 1]"}


def _text(name):
    return Path(ROOT, name).read_text(encoding="utf-8")


def _blocks(name, lang):
    return re.findall(rf"```{lang}\n(.*?)```", _text(name), flags=re.S)


PYTHON_BLOCKS = [
    (name, n)
    for name in DOC_FILES
    if Path(ROOT, name).exists()
    for n in range(len(_blocks(name, "python")))
]


def test_the_python_examples_are_collected():
    # the Python API page has its two examples; a rename of the fence would skip them silently
    assert ("docs/python-api.md", 0) in PYTHON_BLOCKS
    assert ("docs/python-api.md", 1) in PYTHON_BLOCKS


# optional packages an example may need: without them it is skipped, as their tests are
OPTIONAL = {"torch", "onnx", "onnxruntime", "safetensors", "matplotlib", "mpi4py"}


@pytest.mark.parametrize("name,n", PYTHON_BLOCKS, ids=[f"{a}-{b}" for a, b in PYTHON_BLOCKS])
def test_python_example_runs(name, n, monkeypatch, capsys):
    from lstm_cli.errors import MissingExtraError

    monkeypatch.chdir(ROOT)
    code = _blocks(name, "python")[n]
    try:
        exec(compile(code, f"{name} python block {n}", "exec"), {})
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] not in OPTIONAL:
            raise
        pytest.skip(f"needs {err.name}")
    except MissingExtraError as err:
        pytest.skip(str(err))
    out = capsys.readouterr().out
    if (name, n) in EXPECTED_OUTPUT:
        assert EXPECTED_OUTPUT[(name, n)] in out


def test_readme_names_the_two_commands():
    text = _text("README.md")
    assert TEST_COMMAND in text
    ci = _text(".ci/run")
    assert TEST_COMMAND in ci


def test_readme_trains_on_shipped_data():
    text = _text("README.md")
    assert TRAIN_COMMAND in text
    cfg_path = Path(ROOT, "configs", "japanese_vowels.yaml")
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    train = (cfg_path.parent / cfg["data"]["train"]).resolve()
    assert train.is_relative_to(Path(ROOT, "data").resolve()) and train.exists()


def test_readme_config_example_is_the_shipped_config():
    (block,) = _blocks("README.md", "yaml")
    shipped = Path(ROOT, "configs", "japanese_vowels.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(block) == yaml.safe_load(shipped)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(text):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    heads = re.findall(r"^#+ (.*)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("name", DOC_FILES + ["benchmarks/README.md", "benchmarks/NOTES.md"])
def test_relative_links_resolve(name):
    path = Path(ROOT, name)
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{name}: link to {target!r}: no such file"
        if anchor and dest.suffix == ".md":
            heads = _anchors(dest.read_text(encoding="utf-8"))
            assert anchor in heads, f"{name}: link to {target!r}: no such heading"
