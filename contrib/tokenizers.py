r"""Tokenizers: text to token ids in ``0..V-1`` and back.

* ``char`` — one token per character. The alphabet is given, taken from a preset (``text8``:
  the 27 symbols ``a``–``z`` and space, in that order) or collected from the corpus
  (sorted by code point) when the tokenizer is *fitted*. Unknown characters raise, are
  skipped, or become a replacement character that must be in the alphabet.
* ``byte`` — the UTF-8 bytes of the text, ``V = 256``; decoding replaces invalid sequences
  (a sample may end inside a multi-byte character) with U+FFFD.

Encoding is vectorised (code points through numpy) so that text8's 100M characters take
seconds; ids are stored in the smallest integer type that holds ``V``.

Example::

    >>> tok = CharTokenizer(preset="text8")
    >>> tok.vocab_size, tok.encode("ab z").tolist(), tok.decode([7, 8])
    (27, [0, 1, 26, 25], 'hi')
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

import ddkit

TEXT8_ALPHABET = string.ascii_lowercase + " "
_CHUNK = 1 << 23  # characters encoded per numpy pass


def id_dtype(vocab_size: int) -> torch.dtype:
    """Smallest integer type that stores ids ``0..V-1`` (token streams can be large)."""
    if vocab_size <= 256:
        return torch.uint8
    return torch.int16 if vocab_size <= 2**15 else torch.int32


class Tokenizer:
    """Base class. ``encode(text) -> Tensor[L]``, ``decode(ids) -> str``."""

    vocab_size: int

    @property
    def needs_fit(self) -> bool:
        """Whether :meth:`fit` must see the corpus before the vocabulary is known."""
        return False

    def fit(self, text: str) -> Tokenizer:
        return self

    def encode(self, text: str) -> Tensor:
        raise NotImplementedError

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        raise NotImplementedError

    def token_text(self, token: int) -> str:
        """A printable rendering of one token (for trajectories)."""
        raise NotImplementedError

    def spec(self) -> dict:
        """The plugin spec that rebuilds exactly this tokenizer (alphabet included)."""
        raise NotImplementedError


def _ids(ids: Iterable[int] | Tensor) -> list[int]:
    return ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]


class CharTokenizer(Tokenizer):
    """Character-level tokenizer; see the module docstring."""

    def __init__(self,
                 alphabet: Annotated[str | None, Field(
                     min_length=1, description="the symbols, in id order; null: from the corpus")] = None,
                 preset: Annotated[Literal["text8"] | None, Field(
                     description="text8: a-z and space (27 symbols)")] = None,
                 unknown: Literal["error", "skip", "replace"] = "error",
                 replacement: Annotated[str | None, Field(min_length=1, max_length=1)] = None):
        check_char_options(alphabet, preset, unknown, replacement)
        self.unknown, self.replacement = unknown, replacement
        self.preset = preset
        self.alphabet: str | None = None
        if preset == "text8":
            self._set_alphabet(TEXT8_ALPHABET)
        elif alphabet is not None:
            self._set_alphabet(alphabet)

    def _set_alphabet(self, alphabet: str) -> None:
        if not alphabet:
            raise ValueError("the alphabet is empty")
        if len(set(alphabet)) != len(alphabet):
            dup = sorted({c for c in alphabet if alphabet.count(c) > 1})
            raise ValueError(f"the alphabet repeats characters {dup!r}")
        if self.unknown == "replace" and (self.replacement is None or self.replacement not in alphabet):
            raise ValueError(f"unknown='replace' needs a replacement character from the alphabet, "
                             f"got {self.replacement!r}")
        self.alphabet = alphabet
        codes = np.array([ord(c) for c in alphabet], dtype=np.uint32)
        self._order = np.argsort(codes)
        self._sorted_codes = codes[self._order]

    @property
    def needs_fit(self) -> bool:
        return self.alphabet is None

    @property
    def vocab_size(self) -> int:
        if self.alphabet is None:
            raise ValueError("the char tokenizer has no alphabet yet: give one or fit it on a corpus")
        return len(self.alphabet)

    def fit(self, text: str) -> CharTokenizer:
        """Collect the alphabet from ``text``: its distinct characters by code point."""
        if self.alphabet is None:
            self._set_alphabet("".join(sorted(set(text))))
        return self

    def encode(self, text: str) -> Tensor:
        V = self.vocab_size
        parts = []
        for start in range(0, len(text), _CHUNK):
            piece = text[start:start + _CHUNK]
            codes = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
            pos = np.searchsorted(self._sorted_codes, codes).clip(max=V - 1)
            known = self._sorted_codes[pos] == codes
            ids = self._order[pos]
            if not known.all():
                if self.unknown == "error":
                    bad = sorted({chr(c) for c in codes[~known][:1000]})
                    raise ValueError(f"characters {''.join(bad)!r} are not in the tokenizer's alphabet "
                                     f"of {V} characters (set unknown: skip or replace)")
                if self.unknown == "skip":
                    ids = ids[known]
                else:
                    ids = np.where(known, ids, self.alphabet.index(self.replacement))
            parts.append(ids)
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return torch.from_numpy(out.astype(np.int64)).to(id_dtype(V))

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        alphabet = self.alphabet or ""
        return "".join(alphabet[i] for i in _ids(ids))

    def token_text(self, token: int) -> str:
        return (self.alphabet or "")[token]

    def spec(self) -> dict:
        spec = {"name": "char", "alphabet": self.alphabet, "unknown": self.unknown}
        if self.replacement is not None:
            spec["replacement"] = self.replacement
        return spec

    def __repr__(self) -> str:
        size = "unfitted" if self.alphabet is None else f"vocab_size={len(self.alphabet)}"
        return f"CharTokenizer({size})"


class ByteTokenizer(Tokenizer):
    """UTF-8 byte-level tokenizer, ``V = 256``."""

    vocab_size = 256

    def encode(self, text: str) -> Tensor:
        return torch.from_numpy(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy())

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        return bytes(_ids(ids)).decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        return chr(token) if 32 <= token < 127 or token in (9, 10) else "\ufffd"

    def spec(self) -> dict:
        return {"name": "byte"}

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


def check_char_options(alphabet: str | None, preset: str | None, unknown: str, replacement: str | None) -> None:
    """The options of :class:`CharTokenizer` that constrain each other."""
    if alphabet is not None and preset is not None:
        raise ValueError("give either alphabet or preset, not both")
    if unknown == "replace" and replacement is None:
        raise ValueError("unknown: replace needs a replacement character")
    known = TEXT8_ALPHABET if preset == "text8" else alphabet
    if unknown == "replace" and known is not None and replacement not in known:
        raise ValueError(f"replacement {replacement!r} is not in the alphabet {known!r:.80}; "
                         f"the replacement must be one of its characters")


class CharParams(ddkit.params_model(CharTokenizer)):
    # the signature's parameters, and those that constrain each other checked before the
    # tokenizer is built

    @model_validator(mode="after")
    def _consistent(self) -> CharParams:
        check_char_options(self.alphabet, self.preset, self.unknown, self.replacement)
        return self


@ddkit.hookimpl
def register_tokenizers(register):
    register("char", CharTokenizer, params=CharParams,
             summary="characters; alphabet given, preset (text8: 27 symbols) or from the corpus")
    register("byte", ByteTokenizer, summary="UTF-8 bytes, V = 256")
