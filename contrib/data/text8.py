"""text8 from a local file: the first 10^8 characters of cleaned English Wikipedia, 27
symbols (``a``-``z`` and space), one line without a newline.

The literature's protocol: train on the first 90M characters, validate on the next 5M,
test on the last 5M (fractions 0.9 / 0.05 / 0.05 of the file, which gives exactly these
sizes for the real file), evaluate in 256-character chunks and report bits per character.
Download ``http://mattmahoney.net/dc/text8.zip`` and unzip it; ddkit never downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

import ddkit

from ..tokenizers import CharTokenizer
from .base import TextDataset

TRAIN_FRACTION, VALIDATION_FRACTION = 0.9, 0.05


class Text8(TextDataset):
    def __init__(self, path: Annotated[str, Field(description="the unzipped text8 file")]):
        self.path = Path(path).expanduser()

    def default_tokenizer(self) -> CharTokenizer:
        return CharTokenizer(preset="text8")

    def texts(self) -> dict[str, str]:
        if not self.path.is_file():
            raise FileNotFoundError(f"data.dataset.path: no text8 file at {self.path} "
                                    f"(get it from http://mattmahoney.net/dc/text8.zip)")
        raw = self.path.read_bytes()
        bad = raw.translate(None, b"abcdefghijklmnopqrstuvwxyz ")
        if bad:
            raise ValueError(f"{self.path} is not in text8 format: it contains {len(bad)} bytes "
                             f"outside a-z and space, e.g. {bad[:10]!r}")
        text = raw.decode("ascii")
        n = len(text)
        n_train, n_valid = int(round(n * TRAIN_FRACTION)), int(round(n * VALIDATION_FRACTION))
        return {"train": text[:n_train], "validation": text[n_train:n_train + n_valid],
                "test": text[n_train + n_valid:]}

    def info(self) -> dict:
        return {"source": str(self.path)}


@ddkit.hookimpl
def register_datasets(register):
    register("text8", Text8,
             summary="text8 from a local file: 27 symbols, 90M/5M/5M split")
