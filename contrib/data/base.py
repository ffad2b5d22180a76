r"""Data sets and splits.

A data set plugin builds a :class:`Dataset`; :meth:`Dataset.load` returns
:class:`DataSplits`: the tokenizer and one :class:`Split` per split name (``train``,
``validation``, optionally ``test``). A split holds either

* a 1-D token *stream* (text): training draws random-crop windows
  :math:`x_{s:s+N}` with :math:`s \sim U\{0, \dots, L - N\}`; evaluation uses the
  non-overlapping chunks :math:`x_{kN:(k+1)N}` (a last partial chunk is dropped); or
* 2-D *sequences* ``[M, N]`` (synthetic data whose law is known per sequence): training
  draws random rows, evaluation uses every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..tokenizers import Tokenizer


@dataclass
class Split:
    """Token ids of one split: a stream ``[L]`` or sequences ``[M, N]``."""

    tokens: Tensor

    @property
    def is_stream(self) -> bool:
        return self.tokens.dim() == 1

    @property
    def num_tokens(self) -> int:
        return self.tokens.numel()

    def check_length(self, length: int, name: str = "split") -> None:
        if self.is_stream and self.tokens.numel() < length:
            raise ValueError(f"the {name} split has {self.tokens.numel()} tokens, fewer than one "
                             f"window of data.seq_len={length}")
        if not self.is_stream and self.tokens.shape[1] != length:
            raise ValueError(f"the {name} split holds sequences of {self.tokens.shape[1]} tokens, "
                             f"not data.seq_len={length}")

    def windows(self, batch: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """``[batch, length]`` long: random crops of the stream, or random rows."""
        if self.is_stream:
            starts = torch.randint(0, self.tokens.numel() - length + 1, (batch,), generator=generator)
            return self.tokens[starts[:, None] + torch.arange(length)].long()
        rows = torch.randint(0, self.tokens.shape[0], (batch,), generator=generator)
        return self.tokens[rows, :length].long()

    def num_chunks(self, length: int) -> int:
        """How many chunks :meth:`chunks` gives (without making them)."""
        return self.tokens.numel() // length if self.is_stream else self.tokens.shape[0]

    def chunks(self, length: int) -> Tensor:
        """``[M, length]`` long: non-overlapping chunks of the stream, or every row."""
        if self.is_stream:
            count = self.tokens.numel() // length
            return self.tokens[: count * length].view(count, length).long()
        return self.tokens[:, :length].long()


@dataclass
class DataSplits:
    """What a data set loads: tokenizer, splits, and facts such as an exact entropy."""

    tokenizer: Tokenizer
    splits: dict[str, Split]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def __getitem__(self, name: str) -> Split:
        if name not in self.splits:
            raise KeyError(f"this data set has no {name!r} split; it has {', '.join(self.splits)}")
        return self.splits[name]


class Dataset:
    """Base class of data set plugins."""

    def default_tokenizer(self) -> Tokenizer:
        raise NotImplementedError

    def load(self, tokenizer: Tokenizer | None, seq_len: int) -> DataSplits:
        raise NotImplementedError


def split_text(text: str, validation_fraction: float, test_fraction: float = 0.0) -> dict[str, str]:
    """Contiguous split: train first, then validation, then test (deterministic)."""
    n = len(text)
    n_test = int(round(n * test_fraction))
    n_valid = int(round(n * validation_fraction))
    n_train = n - n_valid - n_test
    splits = {"train": text[:n_train], "validation": text[n_train:n_train + n_valid]}
    if n_test:
        splits["test"] = text[n_train + n_valid:]
    return splits


class TextDataset(Dataset):
    """A data set of text: subclasses give :meth:`texts`; a tokenizer that needs fitting
    (a char tokenizer without an alphabet) is fitted on the whole corpus."""

    def texts(self) -> dict[str, str]:
        raise NotImplementedError

    def default_tokenizer(self) -> Tokenizer:
        from ..tokenizers import CharTokenizer

        return CharTokenizer()

    def info(self) -> dict[str, Any]:
        return {}

    def load(self, tokenizer: Tokenizer | None, seq_len: int) -> DataSplits:
        texts = self.texts()
        tokenizer = tokenizer if tokenizer is not None else self.default_tokenizer()
        if tokenizer.needs_fit:
            tokenizer.fit("".join(texts.values()))
        splits = {name: Split(tokenizer.encode(text)) for name, text in texts.items()}
        info = {"text": True, "characters": {name: len(text) for name, text in texts.items()}, **self.info()}
        return DataSplits(tokenizer, splits, info)
