"""The embedded default corpus: CPython's documentation topics (``pydoc_data.topics``).

Every CPython installation ships the English text of the language reference topics used by
``help()`` (about 465 KB), so a pipeline can train without a download. The corpus is the
topics in sorted key order. ``content``:

* ``all`` — the topics verbatim, joined by blank lines;
* ``prose`` — only the running text: paragraphs whose first line is not indented (code
  examples, grammar rules and tables are indented), without heading underlines, each
  paragraph on one line with its whitespace collapsed (about 250 KB).

The split is contiguous (train first, then validation, then test), so it is deterministic
for a given Python version.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

import ddkit

from .base import TextDataset, split_text

_RULE_CHARACTERS = set("*=-+|~^#")


def prose_paragraphs(text: str) -> list[str]:
    """Unindented paragraphs of ``text``, each collapsed to one line."""
    paragraphs, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip():
            current.append(line)
            continue
        if current and not current[0].startswith((" ", "\t")):
            words = " ".join(l for l in current if not set(l.strip()) <= _RULE_CHARACTERS).split()
            if words:
                paragraphs.append(" ".join(words))
        current = []
    return paragraphs


def pydoc_corpus(content: Literal["all", "prose"] = "all") -> str:
    from pydoc_data import topics

    texts = [topics.topics[key] for key in sorted(topics.topics)]
    if content == "prose":
        return "\n".join(p for text in texts for p in prose_paragraphs(text))
    return "\n\n".join(texts)


class PydocTopics(TextDataset):
    def __init__(self, validation_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.05,
                 test_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.0,
                 content: Annotated[Literal["all", "prose"], Field(
                     description="all: verbatim; prose: running text only")] = "all"):
        self.validation_fraction, self.test_fraction = validation_fraction, test_fraction
        self.content = content

    def texts(self) -> dict[str, str]:
        return split_text(pydoc_corpus(self.content), self.validation_fraction, self.test_fraction)

    def info(self) -> dict:
        import sys

        return {"source": f"pydoc_data.topics of Python {sys.version.split()[0]} ({self.content})"}


@ddkit.hookimpl
def register_datasets(register):
    register("pydoc_topics", PydocTopics,
             summary="CPython's documentation topics (~465 KB, no download), contiguous split")
