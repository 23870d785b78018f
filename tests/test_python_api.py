"""The public Python API: its docstring example (doctest) and every runnable block of
docs/python-api.md, executed as a user would paste them into a notebook."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

import genforge

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_api_docstring_examples():
    import genforge.api

    result = doctest.testmod(genforge.api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8
    assert result.failed == 0


def _blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text())


def test_doc_has_runnable_blocks():
    text = DOC.read_text()
    assert len(_blocks()) >= 2
    assert text.count("```python no-test") == 1  # the scenario block (minutes) is the only one skipped


@pytest.mark.parametrize("index", range(len(BLOCK.findall(DOC.read_text()))))
def test_doc_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks()[index], f"{DOC.name}[block {index}]", "exec"), {})


def test_top_level_names_and_errors(tmp_path):
    assert {"ingest", "train", "load", "evaluate", "run_scenario"} <= set(genforge.__all__)
    assert (Path(genforge.__file__).parent / "py.typed").is_file()
    with pytest.raises(genforge.GenforgeError, match="manifest.json"):
        genforge.open_dataset(tmp_path)
    with pytest.raises(genforge.GenforgeError, match="model.json"):
        genforge.load(tmp_path)
    with pytest.raises(AttributeError):
        genforge.no_such_function  # noqa: B018
