r"""Synthetic sequences from a random first-order Markov chain with a known entropy.

The chain is :class:`ddkit.testing.oracles.MarkovChain` (seeded initial distribution and
transition matrix, rows from a symmetric Dirichlet with ``concentration``). Each split holds
independent sequences of ``data.seq_len`` tokens. The exact entropy per token of such a
sequence,

.. math::  \frac{1}{N} H(X_{1:N}) = \frac{1}{N}\Big(H(\pi) + \sum_{n=1}^{N-1}
           \sum_i P(X_n = i)\, H(A_{i,:})\Big),

is reported beside the model's bound (the bound can never go below it), together with the
chain's entropy rate.
"""

from __future__ import annotations

import math
import string
from typing import Annotated

import torch
from pydantic import Field

import ddkit
from ddkit.testing.oracles import MarkovChain

from ..memory import check_fits
from ..tokenizers import CharTokenizer, Tokenizer
from .base import DataSplits, Dataset, Split

#: the largest seed: the splits are drawn with torch generators seeded ``seed * 1000 + 1 ... + 3``
SEED_MAX = (2**63 - 1) // 1000 - 1
#: memory a token takes while a chain is sampled (int64 steps, then their stack)
GENERATION_BYTES_PER_TOKEN = 16
SYMBOLS = string.ascii_lowercase + string.ascii_uppercase + string.digits


class MarkovDataset(Dataset):
    def __init__(self,
                 vocab_size: Annotated[int, Field(ge=2, le=len(SYMBOLS), description="states of the chain")] = 8,
                 seed: Annotated[int, Field(
                     ge=0, le=SEED_MAX, description="seed of the chain and of its samples")] = 0,
                 concentration: Annotated[float, Field(
                     gt=0, description="Dirichlet concentration of each row (small: peaked)")] = 0.5,
                 train_sequences: Annotated[int, Field(ge=1)] = 20000,
                 validation_sequences: Annotated[int, Field(ge=1)] = 1000,
                 test_sequences: Annotated[int, Field(ge=0)] = 1000):
        self.chain = MarkovChain(vocab_size, seed, concentration=concentration)
        self.seed = seed
        self.counts = {"train": train_sequences, "validation": validation_sequences, "test": test_sequences}

    def default_tokenizer(self) -> Tokenizer:
        return CharTokenizer(alphabet=SYMBOLS[: self.chain.vocab_size])

    def load(self, tokenizer: Tokenizer | None, seq_len: int) -> DataSplits:
        V = self.chain.vocab_size
        tokenizer = tokenizer if tokenizer is not None else self.default_tokenizer()
        if tokenizer.needs_fit:
            tokenizer.fit(SYMBOLS[:V])
        if tokenizer.vocab_size != V:
            raise ValueError(f"data.tokenizer has {tokenizer.vocab_size} symbols but the Markov chain "
                             f"has vocab_size {V}: they must match (or omit data.tokenizer)")
        check_fits(GENERATION_BYTES_PER_TOKEN * sum(self.counts.values()) * seq_len,
                   f"{sum(self.counts.values()):,} sequences of data.seq_len={seq_len:,} tokens")
        splits = {}
        for offset, (name, count) in enumerate(self.counts.items()):
            if count:
                generator = torch.Generator().manual_seed(self.seed * 1000 + offset + 1)
                splits[name] = Split(self.chain.sample(count, seq_len, generator).to(torch.uint8 if V <= 256 else torch.int32))
        entropy = self.chain.entropy(seq_len) / seq_len
        info = {"exact_entropy_nats_per_token": entropy,
                "exact_entropy_bits_per_token": entropy / math.log(2),
                "entropy_rate_nats_per_token": self.chain.entropy_rate(),
                "source": repr(self.chain)}
        return DataSplits(tokenizer, splits, info)


@ddkit.hookimpl
def register_datasets(register):
    register("markov", MarkovDataset,
             summary="synthetic first-order Markov chain sequences with their exact entropy")
