r"""Data sets of sequences of varying length, padded to ``data.seq_len``: ``markov_end``
(synthetic, with exact laws) and ``pydoc_paragraphs`` (the embedded corpus, one paragraph per
sequence).

Each sequence is its tokens followed by a padding character that is the tokenizer's last
symbol (id ``V - 1``), so one data set serves every variable-length model in ddkit:

* the ``insertion`` process (FlexMDM) reads that id as padding (its default ``pad_id``);
* fixed-length masked diffusion learns the padded sequences, the padding being an ordinary
  token;
* block diffusion stops a sequence at its first padding token (``semi_ar`` with
  ``eos_id: V - 1``).

``info`` reports ``pad_id``, ``pad_character`` and ``characters`` per split (the tokens
without padding: the denominator of bits per character).

**markov_end.** The chain is :class:`ddkit.testing.insertion_oracles.EndMarkovChain`
over ``vocab_size`` tokens (letters ``a, b, ...``), cut at ``data.seq_len`` tokens; END is
the character ``.`` (id ``vocab_size``; the tokenizer has ``vocab_size + 1`` symbols). The law
of the padded sequences is a Markov chain with END absorbing, so its entropy, the length law
:math:`P(L = l)` and the sequence law are exact; ``info`` reports the entropy per position
(the floor of every bound per token), the length law and the mean length.

**pydoc_paragraphs.** The running-text paragraphs of CPython's documentation topics
(:func:`~ddkit.contrib.data.pydoc_topics.prose_paragraphs`, each on one line), those of at
most ``data.seq_len`` characters (longer ones are left out and counted in ``info``), padded
with a newline. The split is contiguous over the paragraphs (train first, then validation,
then test). The alphabet is the corpus's characters by code point, then the newline.
"""

from __future__ import annotations

import math
import string
import sys
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

import ddkit
from ddkit.testing.insertion_oracles import EndMarkovChain

from ..memory import check_fits
from ..tokenizers import CharTokenizer, Tokenizer, id_dtype
from .base import DataSplits, Dataset, Split
from .markov import GENERATION_BYTES_PER_TOKEN, SEED_MAX
from .pydoc_topics import pydoc_corpus

END = "."
NEWLINE = "\n"
LETTERS = string.ascii_lowercase


def check_pad_last(tokenizer: Tokenizer, pad: str, dataset: str) -> int:
    """The id of the padding character ``pad``, which must be the tokenizer's last symbol
    (the insertion process's default ``pad_id``)."""
    last = False
    if not tokenizer.needs_fit:
        try:
            last = tokenizer.encode(pad).tolist() == [tokenizer.vocab_size - 1]
        except ValueError:  # not in the alphabet
            last = False
    if not last:
        raise ValueError(f"{dataset} pads with {pad!r}, which must be the last symbol of data.tokenizer "
                         f"(id V - 1); omit data.tokenizer to use the data set's own")
    return tokenizer.vocab_size - 1


def padded_split(rows: list[Tensor], seq_len: int, pad_id: int) -> Split:
    """Sequences of token ids padded with ``pad_id`` to ``seq_len``, as one ``[M, seq_len]`` split."""
    dtype = id_dtype(pad_id + 1)
    check_fits(len(rows) * seq_len * dtype.itemsize, f"{len(rows):,} sequences padded to data.seq_len={seq_len:,}")
    out = torch.full((len(rows), seq_len), pad_id, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return Split(out)


def token_count(split: Split, pad_id: int) -> int:
    """Tokens of a padded split, padding excluded."""
    return int((split.tokens != pad_id).sum())


class MarkovEndDataset(Dataset):
    def __init__(self,
                 vocab_size: Annotated[int, Field(
                     ge=1, le=len(LETTERS), description="tokens of the chain, END excluded")] = 8,
                 seed: Annotated[int, Field(
                     ge=0, le=SEED_MAX, description="seed of the chain and of its samples")] = 0,
                 concentration: Annotated[float, Field(gt=0, description="Dirichlet concentration of the rows")] = 0.5,
                 end_probability: Annotated[float, Field(
                     gt=0, le=2 / 3, description="mean probability of stopping after a token")] = 0.05,
                 train_sequences: Annotated[int, Field(ge=1)] = 20000,
                 validation_sequences: Annotated[int, Field(ge=1)] = 1000,
                 test_sequences: Annotated[int, Field(ge=0)] = 1000):
        self.vocab_size, self.seed = vocab_size, seed
        self.concentration, self.end_probability = concentration, end_probability
        self.counts = {"train": train_sequences, "validation": validation_sequences, "test": test_sequences}

    def chain(self, seq_len: int) -> EndMarkovChain:
        """The chain, cut at ``seq_len`` tokens."""
        return EndMarkovChain(self.vocab_size, seq_len, self.seed, concentration=self.concentration,
                              end_probability=self.end_probability)

    def default_tokenizer(self) -> Tokenizer:
        return CharTokenizer(alphabet=LETTERS[: self.vocab_size] + END)

    def load(self, tokenizer: Tokenizer | None, seq_len: int) -> DataSplits:
        tokenizer = tokenizer if tokenizer is not None else self.default_tokenizer()
        pad_id = check_pad_last(tokenizer, END, "markov_end")
        if tokenizer.vocab_size != self.vocab_size + 1:
            raise ValueError(f"data.tokenizer has {tokenizer.vocab_size} symbols but markov_end needs "
                             f"vocab_size + 1 = {self.vocab_size + 1} (the tokens and END)")
        check_fits(GENERATION_BYTES_PER_TOKEN * sum(self.counts.values()) * seq_len,
                   f"{sum(self.counts.values()):,} sequences of data.seq_len={seq_len:,} tokens")
        chain = self.chain(seq_len)
        splits = {}
        for offset, (name, count) in enumerate(self.counts.items()):
            if count:
                generator = torch.Generator().manual_seed(self.seed * 1000 + offset + 1)
                splits[name] = Split(chain.sample(count, generator).to(id_dtype(pad_id + 1)))
        lengths = chain.length_probs()
        entropy = chain.entropy() / seq_len
        info = {"exact_entropy_nats_per_token": entropy,
                "exact_entropy_bits_per_token": entropy / math.log(2),
                "exact_entropy_nats_per_sequence": chain.entropy(),
                "length_probs": lengths.tolist(),
                "mean_length": float((lengths * torch.arange(seq_len + 1)).sum()),
                "pad_id": pad_id, "pad_character": END,
                "characters": {name: token_count(split, pad_id) for name, split in splits.items()},
                "source": repr(chain)}
        return DataSplits(tokenizer, splits, info)


class PydocParagraphs(Dataset):
    def __init__(self, validation_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.1,
                 test_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.0,
                 min_length: Annotated[int, Field(ge=1, description="leave out shorter paragraphs")] = 1):
        self.validation_fraction, self.test_fraction = validation_fraction, test_fraction
        self.min_length = min_length

    @staticmethod
    def paragraphs() -> list[str]:
        return pydoc_corpus("prose").split("\n")

    def default_tokenizer(self) -> Tokenizer:
        characters = set("".join(self.paragraphs()))
        return CharTokenizer(alphabet="".join(sorted(characters)) + NEWLINE)

    def load(self, tokenizer: Tokenizer | None, seq_len: int) -> DataSplits:
        tokenizer = tokenizer if tokenizer is not None else self.default_tokenizer()
        pad_id = check_pad_last(tokenizer, NEWLINE, "pydoc_paragraphs")
        paragraphs = self.paragraphs()
        kept = [p for p in paragraphs if self.min_length <= len(p) <= seq_len]
        if not kept:
            raise ValueError(f"no paragraph has between min_length={self.min_length} and data.seq_len={seq_len} "
                             f"characters")
        count = len(kept)
        n_test = int(round(count * self.test_fraction))
        n_valid = max(1, int(round(count * self.validation_fraction)))
        bounds = {"train": (0, count - n_valid - n_test), "validation": (count - n_valid - n_test, count - n_test)}
        if n_test:
            bounds["test"] = (count - n_test, count)
        splits = {name: padded_split([tokenizer.encode(p) for p in kept[a:b]], seq_len, pad_id)
                  for name, (a, b) in bounds.items()}
        info = {"text": True, "pad_id": pad_id, "pad_character": NEWLINE,
                "characters": {name: token_count(split, pad_id) for name, split in splits.items()},
                "paragraphs": {name: b - a for name, (a, b) in bounds.items()},
                "left_out": {"longer": sum(len(p) > seq_len for p in paragraphs),
                             "shorter": sum(len(p) < self.min_length for p in paragraphs)},
                "source": f"pydoc_data.topics of Python {sys.version.split()[0]} (prose paragraphs)"}
        return DataSplits(tokenizer, splits, info)


@ddkit.hookimpl
def register_datasets(register):
    register("markov_end", MarkovEndDataset,
             summary="variable-length Markov chain with an END state (padding '.'), exact length and sequence laws")
    register("pydoc_paragraphs", PydocParagraphs,
             summary="one pydoc prose paragraph per sequence, padded with newlines (variable length)")
