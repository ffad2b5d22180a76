"""Tokenised corpora on disk: ``ddkit data build`` and the memory-mapped ``token_file`` data set."""

import json

import numpy as np
import pytest
import torch
from pipeline_helpers import invoke

import ddkit
from ddkit.config import ConfigError
from ddkit.contrib.data.base import Split
from ddkit.contrib.data.pydoc_topics import pydoc_corpus
from ddkit.contrib.data.token_file import TokenFileSplit, build_corpus, read_header
from ddkit.contrib.pipeline import Pipeline
from ddkit.contrib.pipeline_config import load_pipeline
from ddkit.contrib.tokenizers import CharTokenizer
from ddkit.contrib.training import Trainer


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """Six text files of about 2.8 MB together (the embedded corpus, six times, with
    a few characters outside ASCII so that splits must not cut a UTF-8 character)."""
    root = tmp_path_factory.mktemp("texts")
    corpus = pydoc_corpus("all")
    paths = []
    for index in range(6):
        path = root / f"part{index}.txt"
        path.write_text(f"— part {index} — é\n" + corpus, encoding="utf-8")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def corpus(texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "char"
    result = invoke("data", "build", out, *texts, "--validation-fraction", "0.1", "--test-fraction", "0.05",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    assert "use it with data.dataset: {name: token_file" in result.output
    return out


def test_build_writes_every_token_of_the_files_in_order(texts, corpus):
    directory, header = read_header(corpus)
    whole = "".join(path.read_text(encoding="utf-8") for path in texts)
    tokenizer = ddkit.build("tokenizer", header["tokenizer"])
    assert tokenizer.vocab_size == header["vocab_size"] == len(set(whole)) and header["dtype"] == "uint8"
    assert header["eot_id"] is None and header["documents"] == 6
    streams = [np.fromfile(directory / header["splits"][name]["file"], dtype=np.uint8)
               for name in ("train", "validation", "test")]
    assert np.array_equal(np.concatenate(streams), tokenizer.encode(whole).numpy())
    sizes = [len(s) for s in streams]
    total_bytes = sum(p.stat().st_size for p in texts)
    assert header["input_bytes"] == total_bytes
    assert abs(sizes[1] - 0.1 * sum(sizes)) < 0.01 * sum(sizes) and abs(sizes[2] - 0.05 * sum(sizes)) < 0.01 * sum(sizes)


def test_windows_and_chunks_equal_the_in_memory_split(corpus):
    data = ddkit.build("dataset", {"name": "token_file", "path": str(corpus)}).load(None, 32)
    mapped = data["train"]
    assert isinstance(mapped, TokenFileSplit) and isinstance(mapped.array, np.memmap)
    in_memory = Split(torch.from_numpy(np.array(mapped.array)))
    got = mapped.windows(16, 32, torch.Generator().manual_seed(3))
    assert got.dtype == torch.long and torch.equal(got, in_memory.windows(16, 32, torch.Generator().manual_seed(3)))
    assert torch.equal(data["validation"].chunks(32), Split(torch.from_numpy(np.array(data["validation"].array))).chunks(32))
    assert mapped.num_tokens == mapped.array.shape[0] and mapped.is_stream


def test_a_pipeline_trains_on_a_token_file_with_keyed_micro_batches(corpus, tmp_path):
    config = load_pipeline({"name": "tokens", "data": {"dataset": {"name": "token_file", "path": str(corpus)},
                                                        "seq_len": 16},
                            "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 16},
                            "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 1,
                                      "progress": False}})
    trainer = Trainer(Pipeline.build(config), tmp_path / "run")
    result = trainer.fit()
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    # each micro-batch (of each process of a distributed run) reads its own keyed windows
    first, second = trainer.micro_batch(1, 0)[0], trainer.micro_batch(1, 1)[0]
    assert torch.equal(first, trainer.micro_batch(1, 0)[0]) and not torch.equal(first, second)
    assert trainer.pipeline.resolved_config()["data"]["tokenizer"]["name"] == "char"


def test_damaged_corpora_are_refused(corpus, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    header = json.loads((corpus / "header.json").read_text())
    (broken / "header.json").write_text(json.dumps(header))
    (broken / "train.bin").write_bytes((corpus / "train.bin").read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"train.bin: \d+ bytes, expected \d+ .*incomplete or damaged"):
        read_header(broken)
    (broken / "header.json").write_text(json.dumps({**header, "format": "other/1"}))
    with pytest.raises(ValueError, match="has format 'other/1'; expected 'ddkit-tokens/1'"):
        read_header(broken)
    (broken / "header.json").write_text(json.dumps({**header, "splits": {"train": {"file": "../x.bin", "tokens": 1}}}))
    with pytest.raises(ValueError, match="expected a file in the same directory"):
        read_header(broken)
    with pytest.raises(FileNotFoundError, match="no header.json in .*ddkit data build"):
        read_header(tmp_path)
    with pytest.raises(ConfigError, match=r"data: .*no header.json"):
        Pipeline.build(load_pipeline({"data": {"dataset": {"name": "token_file", "path": str(tmp_path)}},
                                      "model": {"name": "dit", "vocab_size": 5}}))


def test_build_arguments_are_checked(texts, tmp_path):
    with pytest.raises(ValueError, match="validation_fraction is 0.7"):
        build_corpus(texts, tmp_path / "x", CharTokenizer(), validation_fraction=0.7)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="the files are empty"):
        build_corpus([empty], tmp_path / "x", CharTokenizer(), progress=False)
    result = invoke("data", "build", tmp_path / "x", texts[0], "--tokenizer", "char", "-p", "preset=text9")
    assert result.exit_code == 2 and "--tokenizer" in result.output and "text9" in result.output
