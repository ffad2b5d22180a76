"""Every Python snippet of the documentation runs: each ```python block of README.md and of
every page under docs/, in order, one namespace per page, from the repository's root.

A block that cannot run here is marked on the line right before its fence with
``<!-- not-tested: REASON -->`` (e.g. ``needs a GPU``); the reason is required. Python code
fenced under another name (``py``, ``python3``, ``pycon``) is refused, so no snippet escapes
by its spelling. The pages run with the example plugin of ``contrib/example_plugin``
registered, as a reader who installed it would have it: the testing guide builds its
``exponential`` schedule and ``any_order`` sampler by name. docs/contributing-docs.md
documents the convention."""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import ddkit
from ddkit.registry import reset_registry

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "assets" not in p.parts)]
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<ticks>`{3,})(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)"
                   r"^(?P=indent)(?P=ticks)[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*not-tested:(?P<reason>.*?)-->\s*$")
OTHER_PYTHON_NAMES = {"py", "python3", "pycon", "ipython"}


@dataclass
class Snippet:
    page: Path
    line: int  # of the first code line, 1-based
    code: str
    skip_reason: str | None


def snippets(page: Path) -> list[Snippet]:
    """The ```python blocks of ``page`` in order, with the reason of a not-tested marker."""
    text, found = page.read_text(encoding="utf-8"), []
    for fence in FENCE.finditer(text):
        lang = fence["lang"].lower()
        line = text.count("\n", 0, fence.start()) + 2
        if lang in OTHER_PYTHON_NAMES:
            raise AssertionError(f"{page_id(page)}:{line - 1}: fence the Python code as ```python "
                                 f"(got ```{lang}) so that it is tested")
        if lang != "python":
            continue
        before = text[: fence.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        reason = marker["reason"].strip() if marker else None
        if marker and not reason:
            raise AssertionError(f"{page_id(page)}:{line - 2}: a not-tested marker needs a reason")
        found.append(Snippet(page, line, fence["code"], reason))
    return found


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix() if ROOT in page.parents else str(page)


@pytest.fixture
def example_plugin_registered(monkeypatch):
    """A fresh registry with the example plugin added; the default one is restored after."""
    monkeypatch.syspath_prepend(str(ROOT / "contrib" / "example_plugin" / "src"))
    reset_registry()
    module = importlib.import_module("ddkit_example_plugin")
    ddkit.get_registry().add_plugin(module, name="example", source="ddkit-example-plugin")
    yield
    sys.modules.pop("ddkit_example_plugin", None)
    reset_registry()


# the testing guide shows the marker of ddkit's opt-in pytest plugin, not loaded here
@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=page_id)
def test_every_python_snippet_of_the_page_runs(page, monkeypatch, example_plugin_registered):
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    ran = 0
    for snippet in snippets(page):
        if snippet.skip_reason is not None:
            continue
        # leading newlines put a traceback's line numbers on the page's own lines
        source = "\n" * (snippet.line - 1) + snippet.code
        exec(compile(source, str(page), "exec"), namespace)  # noqa: S102 - our own docs
        ran += 1
    assert ran > 0 or all(s.skip_reason for s in snippets(page))


def test_markers_and_fences_are_recognised(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- not-tested: needs a GPU -->\n```python\n"
                    "import cuda_only\n```\n\n```bash\nls\n```\n", encoding="utf-8")
    found = snippets(page)
    assert [(s.code, s.skip_reason, s.line) for s in found] == [
        ("x = 1\n", None, 4), ("import cuda_only\n", "needs a GPU", 9)]


@pytest.mark.parametrize("text, message", [
    ("<!-- not-tested: -->\n```python\nx = 1\n```\n", "needs a reason"),
    ("```pycon\n>>> 1\n```\n", "fence the Python code as ```python"),
])
def test_a_marker_without_reason_or_another_python_name_is_refused(tmp_path, text, message):
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    with pytest.raises(AssertionError, match=re.escape(message)):
        snippets(page)


def test_every_page_has_been_scanned():
    """The documentation's snippets are all found (the count only grows when pages do)."""
    total = sum(len(snippets(p)) for p in PAGES)
    assert total >= 21 and any(s.skip_reason is None for p in PAGES for s in snippets(p))
