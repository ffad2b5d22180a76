"""The code on docs/writing-plugins.md runs, in order, in one namespace (its blocks assert
what they show)."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md"


def test_every_block_of_the_plugin_guide_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    namespace = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["report"].ok
