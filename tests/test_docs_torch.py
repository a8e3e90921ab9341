"""docs/torch.md's Python example runs as written, and prints what it says."""

import importlib.util
import os
import re

import pytest

pytest.importorskip("torch")
if importlib.util.find_spec("torchax") is None:
    pytest.skip("torchax is not installed", allow_module_level=True)

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "torch.md")


def example() -> str:
    return re.findall(r"```python\n(.*?)```", open(DOC).read(), re.S)[0]


@pytest.mark.slow
def test_torch_doc_example_runs(capsys):
    code = example()
    assert len(code.strip().splitlines()) <= 20
    exec(compile(code, DOC, "exec"), {"__name__": "__doc_example__"})
    printed = capsys.readouterr().out.split("\n")
    assert printed[0] == "(2, 7, 7, 512)" and printed[1] == "(2, 30, 30, 8)"
