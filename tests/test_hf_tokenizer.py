"""The ``hf`` subword tokenizer (optional extra ``ddkit[hf]``): a byte-level BPE trained in
the test on the embedded corpus, a corpus built with it, and a pipeline trained on that."""

import json

import pytest
from pipeline_helpers import invoke

pytest.importorskip("tokenizers", reason="the hf extra (pip install 'ddkit[hf]') is not installed")

import ddkit  # noqa: E402
from ddkit.config import ConfigError  # noqa: E402
from ddkit.contrib.data.pydoc_topics import pydoc_corpus  # noqa: E402
from ddkit.contrib.hf_tokenizer import HFTokenizer, train_bpe  # noqa: E402
from ddkit.contrib.pipeline import Pipeline  # noqa: E402
from ddkit.contrib.pipeline_config import load_pipeline  # noqa: E402
from ddkit.contrib.training import Trainer  # noqa: E402

VOCAB = 400


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    text = pydoc_corpus("prose")
    half = len(text) // 2
    paths = [root / "a.txt", root / "b.txt"]
    paths[0].write_text(text[:half], encoding="utf-8")
    paths[1].write_text(text[half:], encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def tokenizer_file(corpus_files):
    out = corpus_files[0].parent / "tokenizer.json"
    result = invoke("tokenizer", "train", out, *corpus_files, "--vocab-size", VOCAB, "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"vocabulary {VOCAB}, end-of-text id 0 (the mask is id {VOCAB})" in result.output
    return out


def test_a_trained_bpe_round_trips_text_and_compresses_it(tokenizer_file, corpus_files):
    tokenizer = ddkit.build("tokenizer", {"name": "hf", "path": str(tokenizer_file)})
    assert isinstance(tokenizer, HFTokenizer) and tokenizer.vocab_size == VOCAB and tokenizer.eot_id == 0
    text = corpus_files[1].read_text(encoding="utf-8")[:20000] + "\nünïcode ✓ and new lines\n\n  indented"
    ids = tokenizer.encode(text)
    assert ids.max() < VOCAB and tokenizer.decode(ids) == text
    assert len(ids) < 0.6 * len(text.encode("utf-8"))  # subwords: fewer tokens than bytes (~0.52 at V = 400)
    # the mask goes after the vocabulary
    process = ddkit.build("process", {"name": "masked", "vocab_size": tokenizer.vocab_size})
    assert process.mask_id == VOCAB
    spec = tokenizer.spec()
    assert spec["sha256"] == tokenizer.sha256 and ddkit.build("tokenizer", spec).vocab_size == VOCAB


def test_a_corpus_built_with_it_separates_documents_and_trains(tokenizer_file, corpus_files, tmp_path):
    out = tmp_path / "corpus"
    result = invoke("data", "build", out, *corpus_files, "--tokenizer", "hf", "-p", f"path={tokenizer_file}",
                    "--validation-fraction", "0.1", "--no-progress")
    assert result.exit_code == 0, result.output
    header = json.loads((out / "header.json").read_text())
    assert header["eot_id"] == 0 and header["dtype"] == "uint16" and header["vocab_size"] == VOCAB
    config = load_pipeline({"name": "bpe", "data": {"dataset": {"name": "token_file", "path": str(out)}, "seq_len": 16},
                            "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 16},
                            "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "log_every": 1,
                                      "progress": False},
                            "sampler": {"name": "semi_ar", "block_length": 8, "eos_id": header["eot_id"],
                                        "sampler": {"name": "ancestral", "steps": 4}}})
    pipeline = Pipeline.build(config)
    stream = pipeline.data["train"].array
    assert int((stream == 0).sum()) == 1  # one end-of-text after the first document; the second ends in validation
    assert int((pipeline.data["validation"].array == 0).sum()) == 1
    assert pipeline.vocab_size == VOCAB and pipeline.process.mask_id == VOCAB
    result = Trainer(pipeline, tmp_path / "run").fit()
    assert len(result.losses) == 2


def test_tokenizer_errors_are_one_line_each(tokenizer_file, corpus_files, tmp_path):
    with pytest.raises(ConfigError, match=r"data.tokenizer.*no tokenizer file at"):
        Pipeline.build(load_pipeline({"data": {"dataset": "pydoc_topics",
                                               "tokenizer": {"name": "hf", "path": str(tmp_path / "no.json")}},
                                      "model": "dit"}))
    with pytest.raises(ValueError, match=r"end-of-text token '<eos>' is not in the vocabulary"):
        HFTokenizer(str(tokenizer_file), eot="<eos>")
    with pytest.raises(ValueError, match=r"the tokenizer file changed since this config was resolved"):
        HFTokenizer(str(tokenizer_file), sha256="0" * 64)
    not_json = tmp_path / "bad.json"
    not_json.write_text("{}")
    with pytest.raises(ValueError, match="is not a tokenizers file"):
        HFTokenizer(str(not_json))
    with pytest.raises(ValueError, match="a byte-level BPE needs at least 257"):
        train_bpe(corpus_files, tmp_path / "small.json", vocab_size=100)
