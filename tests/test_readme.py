"""The README's examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def block_after(marker: str) -> str:
    text = README.read_text()
    at = text.index(marker)
    return re.search(r"```python\n(.*?)```", text[at:], re.S).group(1)


def test_own_model_example_runs_as_written(capsys):
    code = block_after("<!-- own-model example")
    assert len(code.strip().splitlines()) <= 30
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result, metrics = namespace["result"], namespace["metrics"]
    from jaxdissect.world import LABELS
    assert result.num_units == 32 and result.iou.shape == (32, len(LABELS))
    assert metrics.balanced_accuracy.shape == (32, 11)
    assert "[" in capsys.readouterr().out
