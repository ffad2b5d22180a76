"""pipelines/owt_small.yaml, the GPU recipe of the MDLM / BD3-LM "small" setting, validates:
as a file, and built (12 x 768 network, 1024 tokens) on a corpus with GPT-2's vocabulary size
made in the test (a word-level tokenizer of 50,257 symbols stands in for GPT-2's file)."""

import pytest
from pipeline_helpers import ROOT, invoke

tokenizers = pytest.importorskip("tokenizers", reason="the hf extra (pip install 'ddkit[hf]') is not installed")

from ddkit.contrib.data.token_file import build_corpus  # noqa: E402
from ddkit.contrib.hf_tokenizer import HFTokenizer  # noqa: E402

RECIPE = ROOT / "pipelines" / "owt_small.yaml"
GPT2_VOCAB = 50257


def test_the_recipe_validates_as_a_file():
    result = invoke("config", "validate", RECIPE, "--no-data")
    assert result.exit_code == 0 and "valid as a file" in result.output, result.output


def test_the_recipe_builds_with_a_gpt2_size_vocabulary(tmp_path):
    words = {f"w{i}": i for i in range(GPT2_VOCAB - 1)} | {"<|endoftext|>": GPT2_VOCAB - 1}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=words, unk_token="w0"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.save(str(tmp_path / "tokenizer.json"))
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{(i * 7919) % (GPT2_VOCAB - 1)}" for i in range(5000)))
    build_corpus([text], tmp_path / "corpus", HFTokenizer(str(tmp_path / "tokenizer.json")),
                 validation_fraction=0.3, progress=False)
    result = invoke("config", "validate", RECIPE, f"data.dataset.path={tmp_path / 'corpus'}")
    assert result.exit_code == 0, result.output
    assert f"valid (vocabulary {GPT2_VOCAB}," in result.output
    parameters = int(result.output.split(", ")[1].split()[0].replace(",", ""))
    assert 160e6 < parameters < 180e6  # 12 x 768 blocks and the 50,258 x 768 embedding and head
