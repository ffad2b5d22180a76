"""Any local text file, split contiguously into train / validation (/ test)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

import ddkit

from .base import TextDataset, split_text


class TextFile(TextDataset):
    def __init__(self, path: Annotated[str, Field(description="a UTF-8 (or `encoding`) text file")],
                 validation_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.05,
                 test_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.0,
                 encoding: str = "utf-8"):
        self.path = Path(path).expanduser()
        self.validation_fraction, self.test_fraction = validation_fraction, test_fraction
        self.encoding = encoding

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
