"""The ``hf_datasets`` data set (optional extra ``ddkit[datasets]``), on small local data
sets made in the test: a JSON-lines file read by the ``json`` builder, and a ``save_to_disk``
directory with two splits."""

import json
import os
import tempfile

import pytest

# the library's cache goes to a temporary directory and nothing is fetched
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="ddkit-hf-home-"))
os.environ["HF_DATASETS_OFFLINE"] = "1"
datasets = pytest.importorskip("datasets", reason="the datasets extra (pip install 'ddkit[datasets]') is not installed")

import ddkit  # noqa: E402
from ddkit.config import ConfigError  # noqa: E402
from ddkit.contrib.pipeline import Pipeline  # noqa: E402
from ddkit.contrib.pipeline_config import load_pipeline  # noqa: E402
from ddkit.contrib.training import Trainer  # noqa: E402

DOCUMENTS = [f"document {i}: " + "the quick brown fox jumps over the lazy dog. " * (3 + i % 4) for i in range(40)]


def test_json_lines_through_the_json_builder(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(DOCUMENTS)))
    dataset = ddkit.build("dataset", {"name": "hf_datasets", "source": "json", "data_files": str(path),
                                      "text_field": "body", "validation_fraction": 0.1})
    texts = dataset.texts()
    whole = "\n\n".join(DOCUMENTS)
    assert texts["train"] + texts["validation"] == whole
    assert abs(len(texts["validation"]) - 0.1 * len(whole)) <= 1
    with pytest.raises(ValueError, match=r"has no column 'text'; it has body, id"):
        ddkit.build("dataset", {"name": "hf_datasets", "source": "json", "data_files": str(path)}).texts()


def test_a_saved_data_set_trains(tmp_path):
    saved = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": DOCUMENTS}),
                                  "extra": datasets.Dataset.from_dict({"text": DOCUMENTS[:3]})})
    saved.save_to_disk(str(tmp_path / "saved"))
    spec = {"name": "hf_datasets", "source": str(tmp_path / "saved"), "max_documents": 30}
    config = load_pipeline({"name": "hf", "data": {"dataset": spec, "seq_len": 16},
                            "model": {"name": "dit", "width": 16, "depth": 1, "heads": 2, "max_seq_len": 16},
                            "train": {"steps": 1, "batch_size": 2, "warmup_steps": 1, "progress": False}})
    pipeline = Pipeline.build(config)
    train_text = pipeline.tokenizer.decode(pipeline.data["train"].tokens)
    assert train_text.startswith(DOCUMENTS[0]) and DOCUMENTS[29][:20] not in train_text  # the tail is validation
    assert len(Trainer(pipeline, tmp_path / "run").fit().losses) == 1
    with pytest.raises(ConfigError, match=r"data: .*has no split 'test'; it has train, extra"):
        Pipeline.build(load_pipeline({**config.model_dump(mode="json"), "data": {
            "dataset": {**spec, "split": "test"}, "seq_len": 16}}))
