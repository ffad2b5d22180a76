"""The embedded default corpus: CPython's documentation topics (``pydoc_data.topics``).

Every CPython installation ships the English text of the language reference topics used by
``help()`` (about 465 KB), so a pipeline can train without a download. The corpus is the
topics in sorted key order joined by blank lines; the split is contiguous (train first,
then validation, then test), so it is deterministic for a given Python version.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

import ddkit

from .base import TextDataset, split_text


def pydoc_corpus() -> str:
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key] for key in sorted(topics.topics))


class PydocTopics(TextDataset):
    def __init__(self, validation_fraction: float = 0.05, test_fraction: float = 0.0):
        self.validation_fraction, self.test_fraction = validation_fraction, test_fraction

    def texts(self) -> dict[str, str]:
        return split_text(pydoc_corpus(), self.validation_fraction, self.test_fraction)

    def info(self) -> dict:
        import sys

        return {"source": f"pydoc_data.topics of Python {sys.version.split()[0]}"}


class PydocTopicsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    validation_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.0, ge=0, lt=0.5)


@ddkit.hookimpl
def register_datasets(register):
    register("pydoc_topics", PydocTopics, params=PydocTopicsParams,
             summary="CPython's documentation topics (~465 KB, no download), contiguous split")
