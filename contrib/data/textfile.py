"""Any local text file, split contiguously into train / validation (/ test)."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

import ddkit

from .base import TextDataset, split_text


def known_encoding(name: str) -> str:
    """``name`` if Python has a text codec of that name (``utf-8``, ``latin-1``, ...)."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r}; expected a Python codec name such as "
                         f"utf-8, latin-1 or cp1252") from None
    return name


class TextFile(TextDataset):
    def __init__(self, path: Annotated[str, Field(description="a UTF-8 (or `encoding`) text file")],
                 validation_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.05,
                 test_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.0,
                 encoding: Annotated[str, AfterValidator(known_encoding)] = "utf-8"):
        self.path = Path(path).expanduser()
        self.validation_fraction, self.test_fraction = validation_fraction, test_fraction
        self.encoding = known_encoding(encoding)

    def texts(self) -> dict[str, str]:
        if not self.path.is_file():
            raise FileNotFoundError(f"data.dataset.path: no file at {self.path}")
        return split_text(self.path.read_text(encoding=self.encoding), self.validation_fraction,
                          self.test_fraction)

    def info(self) -> dict:
        return {"source": str(self.path)}


@ddkit.hookimpl
def register_datasets(register):
    register("textfile", TextFile, summary="a local text file, contiguous split")
