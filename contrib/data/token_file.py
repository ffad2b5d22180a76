r"""Tokenised corpora on disk, read through memory maps: data larger than memory.

A corpus directory holds one raw array of token ids per split and a JSON header::

    corpus/
      header.json       {"format": "ddkit-tokens/1", "dtype": "uint16", "vocab_size": 50257,
                         "tokenizer": {...the tokenizer's spec...}, "eot_id": 50256,
                         "splits": {"train": {"file": "train.bin", "tokens": 9035582198}, ...},
                         "sources": [...], "documents": 8013769}
      train.bin         the ids, little-endian, ``dtype`` (uint8 up to 256 symbols, uint16 up to 65 536,
                        else uint32)
      validation.bin

:func:`build_corpus` (``ddkit data build``) writes one from text files, streaming: files are
read in blocks of whole lines, tokenised and appended, so memory stays at one block whatever
the corpus size. Each file is a document; the tokenizer's end-of-text id (if it has one) is
written after each. The last ``validation_fraction`` (and ``test_fraction``) of the input
bytes go to the validation (and test) split, contiguously, as :func:`~.base.split_text` does.

The ``token_file`` data set opens the arrays with :class:`numpy.memmap` and never reads them
whole: a training batch reads its ``B`` windows (random crops at
:math:`s \sim U\{0, \dots, L - N\}`, drawn from the trainer's keyed generator, so every
process of a distributed run reads its own crops), and evaluation reads the non-overlapping
chunks it uses. The operating system's page cache keeps the hot pages in memory.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

import ddkit

from ..checkpoint import atomic_write_text
from ..tokenizers import Tokenizer
from .base import DataSplits, Dataset, Split

FORMAT = "ddkit-tokens/1"
HEADER = "header.json"
#: bytes of text tokenised at a time (cut at a line end)
BLOCK_BYTES = 1 << 22


def token_dtype(vocab_size: int) -> np.dtype:
    """The array type of a corpus: uint8 up to 256 symbols, uint16 up to 65 536, else uint32."""
    if vocab_size <= 1 << 8:
        return np.dtype("u1")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class TokenFileSplit(Split):
    """A split whose token stream is a memory map of the file (``tokens`` is a zero-copy
    torch view of it, uint16 or uint32; the map is copy-on-write, so nothing ever writes to the
    file); windows and chunks read only the rows they return."""

    def __init__(self, array: np.memmap):
        super().__init__(torch.from_numpy(array))
        self.array = array

    def windows(self, batch: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        starts = torch.randint(0, self.num_tokens - length + 1, (batch,), generator=generator).numpy()
        rows = np.empty((batch, length), dtype=np.int64)
        for row, start in zip(rows, starts):  # B contiguous reads
            row[:] = self.array[start:start + length]
        return torch.from_numpy(rows)

    def chunks(self, length: int) -> Tensor:
        count = self.num_tokens // length
        return torch.from_numpy(np.asarray(self.array[: count * length], dtype=np.int64).reshape(count, length))


def read_header(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(directory, header)`` of a corpus given its directory or its ``header.json``; the
    header's fields and the array files' sizes are checked."""
    path = Path(path).expanduser()
    directory = path if path.is_dir() else path.parent
    file = directory / HEADER
    if not file.is_file():
        raise FileNotFoundError(f"data.dataset.path: no {HEADER} in {directory} (build one with ddkit data build)")
    try:
        header = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{file} has format {header.get('format') if isinstance(header, dict) else None!r}; "
                         f"expected {FORMAT!r}")
    vocab_size, dtype = header.get("vocab_size"), header.get("dtype")
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"{file}: vocab_size is {vocab_size!r}, expected a positive integer")
    if dtype not in ("uint8", "uint16", "uint32") or np.dtype(dtype).itemsize < token_dtype(vocab_size).itemsize:
        raise ValueError(f"{file}: dtype {dtype!r} does not hold {vocab_size} symbols (uint8, uint16 or uint32)")
    splits = header.get("splits")
    if not isinstance(splits, dict) or "train" not in splits:
        raise ValueError(f"{file}: 'splits' must map split names to files and include 'train'")
    for name, entry in splits.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("tokens"), int) or not isinstance(entry.get("file"), str):
            raise ValueError(f"{file}: split {name!r} must be {{'file': ..., 'tokens': <int>}}, got {entry!r}")
        if Path(entry["file"]).name != entry["file"]:
            raise ValueError(f"{file}: split {name!r} names {entry['file']!r}; expected a file in the same directory")
        data = directory / entry["file"]
        expected = entry["tokens"] * np.dtype(dtype).itemsize
        size = data.stat().st_size if data.is_file() else None
        if size != expected:
            raise ValueError(f"{data}: {'missing' if size is None else f'{size} bytes'}, expected {expected} "
                             f"({entry['tokens']} {dtype} tokens); the corpus is incomplete or damaged")
    return directory, header


class TokenFile(Dataset):
    """A tokenised corpus directory (see the module docstring): its own tokenizer, every
    split it holds, memory-mapped."""

    def __init__(self, path: Annotated[str, Field(description="corpus directory (or its header.json) "
                                                              "written by ddkit data build")]):
        self.path = path

    def default_tokenizer(self) -> Tokenizer:
        _, header = read_header(self.path)
        return ddkit.build("tokenizer", header["tokenizer"])

    def load(self, tokenizer: Tokenizer | None, seq_len: int) -> DataSplits:
        directory, header = read_header(self.path)
        own = self.default_tokenizer()
        if tokenizer is not None and tokenizer.spec() != own.spec():
            raise ValueError(f"data.tokenizer {tokenizer.spec()['name']!r} is not the tokenizer the corpus "
                             f"{directory} was built with ({own.spec()['name']!r}); omit data.tokenizer")
        if own.vocab_size != header["vocab_size"]:
            raise ValueError(f"{directory}: the header's vocab_size {header['vocab_size']} is not the vocabulary of "
                             f"its tokenizer ({own.vocab_size} symbols)")
        dtype = np.dtype(header["dtype"]).newbyteorder("<")
        splits = {name: TokenFileSplit(np.memmap(directory / entry["file"], dtype=dtype, mode="c",
                                                 shape=(entry["tokens"],)))
                  for name, entry in header["splits"].items()}
        info = {"source": str(directory), "tokens": {name: entry["tokens"] for name, entry in header["splits"].items()},
                "eot_id": header.get("eot_id")}
        return DataSplits(own, splits, info)


def _blocks(paths: Sequence[Path], progress: tqdm) -> Iterator[tuple[int, bytes, bool]]:
    """``(file index, bytes, last block of the file)``, each block ending at a line end (or
    the file's end)."""
    for index, path in enumerate(paths):
        with open(path, "rb") as f:
            carry = b""
            while True:
                data = f.read(BLOCK_BYTES)
                progress.update(len(data))
                if not data:
                    yield index, carry, True
                    break
                data = carry + data
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # no line end yet: keep reading
                    carry = data
                    continue
                carry = data[cut:]
                yield index, data[:cut], False


def fit_alphabet(paths: Sequence[Path], encoding: str = "utf-8") -> str:
    """Every character of the files, sorted by code point (a char tokenizer's fit, streamed)."""
    seen: set[str] = set()
    for path in paths:
        decoder = codecs.getincrementaldecoder(encoding)()
        with open(path, "rb") as f:
            while data := f.read(BLOCK_BYTES):
                seen.update(decoder.decode(data))
        seen.update(decoder.decode(b"", final=True))
    return "".join(sorted(seen))


def build_corpus(paths: Sequence[str | Path], out: str | Path, tokenizer: Tokenizer, *,
                 validation_fraction: float = 0.0005, test_fraction: float = 0.0,
                 encoding: str = "utf-8", progress: bool = True) -> dict[str, Any]:
    """Tokenise text files into a corpus directory ``out`` (see the module docstring) and
    return its header. A tokenizer that needs fitting (a char tokenizer without an alphabet)
    is fitted on the files first. The header is written last, so a directory without one is
    an unfinished build."""
    paths = [Path(p).expanduser() for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise FileNotFoundError(f"no text file at {', '.join(missing)}" if missing else "give at least one text file")
    for name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 0.5:
            raise ValueError(f"{name} is {fraction}; expected a number in [0, 0.5)")
    total = sum(p.stat().st_size for p in paths)
    if total == 0:
        raise ValueError(f"the files are empty: {', '.join(map(str, paths))}")
    if tokenizer.needs_fit:
        tokenizer.fit(fit_alphabet(paths, encoding))
    vocab_size = tokenizer.vocab_size
    dtype = token_dtype(vocab_size)
    eot_id = getattr(tokenizer, "eot_id", None)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / HEADER).unlink(missing_ok=True)  # the directory is unfinished until the new header is written
    n_test = round(total * test_fraction)
    n_validation = round(total * validation_fraction)
    # (split, first byte, end byte) in the concatenated input; empty splits are left out
    ranges = [(name, begin, stop) for name, begin, stop in (
        ("train", 0, total - n_validation - n_test), ("validation", total - n_validation - n_test, total - n_test),
        ("test", total - n_test, total)) if stop > begin or name == "train"]
    names = [name for name, _, _ in ranges]
    files = {name: open(out / f"{name}.bin", "wb") for name in names}
    counts = dict.fromkeys(names, 0)
    offset = 0

    def write(name: str, ids: np.ndarray) -> None:
        if ids.size:
            files[name].write(ids.astype(dtype, copy=False).tobytes())
            counts[name] += int(ids.size)

    def encode(data: bytes) -> np.ndarray:
        text = data.decode(encoding, errors="replace")
        return tokenizer.encode(text).numpy() if text else np.zeros(0, dtype=dtype)

    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc="tokenising", disable=not progress,
                  dynamic_ncols=True, mininterval=0.5) as bar:
            for _, block, last in _blocks(paths, bar):
                start, end = offset, offset + len(block)
                offset = end
                for name, begin, stop in ranges:
                    if stop <= start or begin >= end:
                        continue
                    lo, hi = max(begin, start) - start, min(stop, end) - start
                    while 0 < lo < hi and 0x80 <= block[lo] < 0xC0:  # never cut a UTF-8 character
                        lo += 1
                    while lo < hi < len(block) and 0x80 <= block[hi] < 0xC0:
                        hi += 1
                    write(name, encode(block[lo:hi]))
                if last and eot_id is not None:  # after the document, in the split of its last byte
                    where = max(end - 1, 0)
                    write(next(name for name, begin, stop in ranges if begin <= where < stop), np.array([eot_id]))
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
    finally:
        for f in files.values():
            f.close()
    header = {"format": FORMAT, "dtype": dtype.name, "vocab_size": vocab_size, "tokenizer": tokenizer.spec(),
              "eot_id": eot_id, "splits": {name: {"file": f"{name}.bin", "tokens": counts[name]} for name in names},
              "sources": [str(p) for p in paths], "documents": len(paths), "input_bytes": total}
    atomic_write_text(out / HEADER, json.dumps(header, indent=1, ensure_ascii=False))
    return header


@ddkit.hookimpl
def register_datasets(register):
    register("token_file", TokenFile,
             summary="a tokenised corpus on disk (ddkit data build), memory-mapped: random crops without loading it")
