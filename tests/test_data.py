"""Data sets and splits: the embedded corpus, text8 on a generated fixture in its format,
local text files, the Markov chain with its exact entropy, windows and chunks."""

import math
import random

import pytest
import torch

import ddkit
from ddkit.contrib.data import Split, split_text
from ddkit.contrib.data.pydoc_topics import pydoc_corpus
from ddkit.testing.oracles import MarkovChain


def test_pydoc_corpus_split_is_deterministic_and_contiguous():
    corpus = pydoc_corpus()
    assert len(corpus) > 300_000  # ~465 KB in CPython 3.11
    data = ddkit.build("dataset", {"name": "pydoc_topics", "validation_fraction": 0.05}).load(None, 64)
    again = ddkit.build("dataset", "pydoc_topics").load(None, 64)
    assert torch.equal(data["train"].tokens, again["train"].tokens)
    tok = data.tokenizer
    assert tok.alphabet == "".join(sorted(set(corpus)))
    train, valid = tok.decode(data["train"].tokens), tok.decode(data["validation"].tokens)
    assert train + valid == corpus
    assert len(valid) == round(0.05 * len(corpus))
    assert "test" not in data.splits
    with pytest.raises(KeyError, match="no 'test' split"):
        data["test"]


def test_pydoc_prose_keeps_unindented_paragraphs_only():
    from ddkit.contrib.data.pydoc_topics import prose_paragraphs

    text = "Title\n*****\n\nSome   running\ntext here.\n\n   code = 1\n   more()\n\n+---+\n| a |\n+---+\n\nEnd."
    assert prose_paragraphs(text) == ["Title", "Some running text here.", "| a |", "End."]
    prose = ddkit.build("dataset", {"name": "pydoc_topics", "content": "prose"}).load(None, 64)
    text = prose.tokenizer.decode(prose["train"].tokens)
    assert "\n\n" not in text and "   " not in text and 200_000 < len(text) < len(pydoc_corpus())


def _text8_fixture(path, n=20_000, seed=0):
    rng = random.Random(seed)
    words = ["anarchism", "originated", "as", "a", "term", "of", "abuse", "the", "zebra", "quick"]
    text = ""
    while len(text) < n:
        text += rng.choice(words) + " "
    text = text[:n]
    path.write_text(text)  # text8: one line, a-z and space, no newline
    return text


def test_text8_split_and_chunks(tmp_path):
    path = tmp_path / "text8"
    text = _text8_fixture(path)
    data = ddkit.build("dataset", {"name": "text8", "path": str(path)}).load(None, 256)
    assert data.vocab_size == 27
    sizes = {name: split.num_tokens for name, split in data.splits.items()}
    assert sizes == {"train": 18_000, "validation": 1_000, "test": 1_000}  # 90/5/5
    decode = data.tokenizer.decode
    assert decode(data["train"].tokens) == text[:18_000]
    assert decode(data["validation"].tokens) == text[18_000:19_000]
    assert decode(data["test"].tokens) == text[19_000:]
    chunks = data["validation"].chunks(256)
    assert chunks.shape == (3, 256) and chunks.dtype == torch.long  # 1000 // 256, partial dropped
    assert decode(chunks.flatten()) == text[18_000:18_000 + 768]


def test_text8_rejects_other_formats(tmp_path):
    path = tmp_path / "text8"
    path.write_text("Hello World\n")
    with pytest.raises(ValueError, match="not in text8 format"):
        ddkit.build("dataset", {"name": "text8", "path": str(path)}).load(None, 8)
    with pytest.raises(FileNotFoundError, match="no text8 file"):
        ddkit.build("dataset", {"name": "text8", "path": str(tmp_path / "missing")}).load(None, 8)


def test_textfile_with_byte_tokenizer(tmp_path):
    path = tmp_path / "poem.txt"
    text = "ünïcode lines\n" * 50
    path.write_text(text, encoding="utf-8")
    tok = ddkit.build("tokenizer", "byte")
    data = ddkit.build("dataset", {"name": "textfile", "path": str(path), "validation_fraction": 0.1,
                                   "test_fraction": 0.1}).load(tok, 16)
    n = len(text)
    assert [len(data[s].tokens) > 0 for s in ("train", "validation", "test")] == [True] * 3
    joined = b"".join(bytes(data[s].tokens.tolist()) for s in ("train", "validation", "test"))
    assert joined.decode("utf-8") == text and data.vocab_size == 256
    assert split_text(text, 0.1, 0.1)["validation"] == text[n - round(0.1 * n) * 2: n - round(0.1 * n)]


def test_windows_are_random_crops_and_reproducible():
    split = Split(torch.arange(100, dtype=torch.int16))
    a = split.windows(64, 10, torch.Generator().manual_seed(1))
    b = split.windows(64, 10, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (64, 10)
    assert bool(((a[:, 1:] - a[:, :-1]) == 1).all())  # contiguous crops
    assert int(a[:, 0].min()) >= 0 and int(a[:, -1].max()) <= 99
    starts = split.windows(20000, 10, torch.Generator().manual_seed(2))[:, 0]
    counts = torch.bincount(starts, minlength=91).double()
    # every start 0..90 is possible and roughly uniform: chi-square with 90 dof, p < 1e-6 bound
    expected = 20000 / 91
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert counts.numel() == 91 and chi2 < 200
    with pytest.raises(ValueError, match="fewer than one window"):
        Split(torch.arange(5)).check_length(8)


def test_markov_dataset_reports_exact_entropy():
    ds = ddkit.build("dataset", {"name": "markov", "vocab_size": 4, "seed": 3, "concentration": 0.5,
                                 "train_sequences": 200, "validation_sequences": 50, "test_sequences": 0})
    data = ds.load(None, 12)
    chain = MarkovChain(4, 3, concentration=0.5)
    assert data["train"].tokens.shape == (200, 12) and "test" not in data.splits
    assert data.info["exact_entropy_nats_per_token"] == pytest.approx(chain.entropy(12) / 12)
    assert data.info["exact_entropy_bits_per_token"] == pytest.approx(chain.entropy(12) / 12 / math.log(2))
    assert data.tokenizer.decode(torch.tensor([0, 1, 2, 3])) == "abcd"
    assert torch.equal(data["validation"].chunks(12), data["validation"].tokens.long())
    # the sequences follow the chain: empirical log-likelihood per token near the entropy
    nll = -float(chain.log_prob(data["train"].tokens.long()).mean()) / 12
    assert abs(nll - chain.entropy(12) / 12) < 0.1
    with pytest.raises(ValueError, match="must match"):
        ds.load(ddkit.build("tokenizer", {"name": "char", "alphabet": "abc"}), 12)
