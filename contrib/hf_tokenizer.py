r"""Subword tokenizers through the Hugging Face ``tokenizers`` library (optional: install
with ``pip install 'ddkit[hf]'``).

The ``hf`` tokenizer loads a ``tokenizer.json`` (GPT-2's, or one trained with
``ddkit tokenizer train``, :func:`train_bpe`). Its vocabulary, added tokens included, gives
``V``; the masked process puts the mask at id ``V``, after the vocabulary, as for every
tokenizer. ``eot`` names the end-of-text token (``<|endoftext|>`` by default; ``null``: none):
its id, :attr:`HFTokenizer.eot_id`, separates documents in a corpus built by
``ddkit data build`` and is what ``semi_ar``'s ``eos_id`` stops at. The file's SHA-256 is
recorded in the resolved config (``sha256``) and checked when the tokenizer is loaded again,
so a checkpoint never decodes with a changed vocabulary.

Example (a byte-level BPE of 300 symbols trained on a text file)::

    train_bpe(["corpus.txt"], "tokenizer.json", vocab_size=300)
    tok = HFTokenizer("tokenizer.json")
    tok.decode(tok.encode("def f(x): return x")) == "def f(x): return x"
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

import ddkit

from .tokenizers import Tokenizer, id_dtype

EXTRA_HINT = "the hf tokenizer needs the tokenizers package: pip install 'ddkit[hf]'"
#: characters of text encoded per call of the library (pieces cut after a line end, encoded in parallel)
PIECE = 1 << 16


def _library():
    try:
        import tokenizers
    except ImportError:
        raise ValueError(EXTRA_HINT) from None
    return tokenizers


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pieces(text: str) -> list[str]:
    """``text`` cut after line ends into pieces of about :data:`PIECE` characters."""
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + PIECE)
        end = len(text) if end < 0 else end + 1
        pieces.append(text[start:end])
        start = end
    return pieces


class HFTokenizer(Tokenizer):
    """A ``tokenizer.json`` through the ``tokenizers`` library; see the module docstring.
    Long texts are encoded in pieces cut after line ends: a token never spans a line end
    there (byte-level BPE merges whitespace runs across a line end only within one piece)."""

    def __init__(self,
                 path: Annotated[str, Field(description="a tokenizer.json (Hugging Face tokenizers format)")],
                 eot: Annotated[str | None, Field(
                     description="the end-of-text token; null: the vocabulary has none")] = "<|endoftext|>",
                 sha256: Annotated[str | None, Field(
                     pattern=r"^[0-9a-f]{64}$", description="the file's SHA-256, checked when given "
                                                            "(the resolved config records it)")] = None):
        library = _library()
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ValueError(f"no tokenizer file at {self.path} (train one with ddkit tokenizer train)")
        self.sha256 = file_sha256(self.path)
        if sha256 is not None and sha256 != self.sha256:
            raise ValueError(f"{self.path} has SHA-256 {self.sha256[:12]}..., not the recorded {sha256[:12]}...: "
                             f"the tokenizer file changed since this config was resolved")
        try:
            self.backend = library.Tokenizer.from_file(str(self.path))
        except Exception as exc:  # the library raises its own exception types for a malformed file
            raise ValueError(f"{self.path} is not a tokenizers file: {exc}") from None
        self.vocab_size = self.backend.get_vocab_size(with_added_tokens=True)
        self.eot = eot
        self.eot_id = None if eot is None else self.backend.token_to_id(eot)
        if eot is not None and self.eot_id is None:
            raise ValueError(f"the end-of-text token {eot!r} is not in the vocabulary of {self.path} "
                             f"(give eot: <its token> or eot: null)")

    def encode(self, text: str) -> Tensor:
        encodings = self.backend.encode_batch(_pieces(text), add_special_tokens=False)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        out = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        return torch.from_numpy(out).to(id_dtype(self.vocab_size))

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        values = ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        return self.backend.decode(values, skip_special_tokens=False)

    def token_text(self, token: int) -> str:
        return self.backend.decode([token], skip_special_tokens=False)

    def spec(self) -> dict:
        return {"name": "hf", "path": str(self.path), "eot": self.eot, "sha256": self.sha256}

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"


def train_bpe(paths: Sequence[str | Path], out: str | Path, *, vocab_size: int, eot: str | None = "<|endoftext|>",
              min_frequency: int = 2, progress: bool = True) -> HFTokenizer:
    """Train a byte-level BPE tokenizer (GPT-2's scheme: every byte is a symbol, so any text
    encodes) with ``vocab_size`` symbols on text files, save it as ``out`` and return it.
    ``eot`` becomes a special token (id 0)."""
    library = _library()
    paths = [Path(p).expanduser() for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise FileNotFoundError(f"no text file at {', '.join(missing)}" if missing else "give at least one text file")
    alphabet = library.pre_tokenizers.ByteLevel.alphabet()
    floor = len(alphabet) + (eot is not None)
    if vocab_size < floor:
        raise ValueError(f"vocab_size is {vocab_size}; a byte-level BPE needs at least {floor} "
                         f"(256 bytes{' and the end-of-text token' if eot is not None else ''})")
    tokenizer = library.Tokenizer(library.models.BPE())
    tokenizer.pre_tokenizer = library.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = library.decoders.ByteLevel()
    trainer = library.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                          special_tokens=[eot] if eot is not None else [],
                                          initial_alphabet=alphabet, show_progress=progress)
    tokenizer.train([str(p) for p in paths], trainer)
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
    return HFTokenizer(str(out), eot=eot)


@ddkit.hookimpl
def register_tokenizers(register):
    register("hf", HFTokenizer,
             summary="subword tokenizer from a tokenizer.json (Hugging Face tokenizers; pip install 'ddkit[hf]')")
