"""Text from a Hugging Face ``datasets`` data set (optional: ``pip install 'ddkit[datasets]'``).

``source`` is a directory written by ``Dataset.save_to_disk`` or anything
:func:`datasets.load_dataset` accepts (a builder such as ``text``, ``json`` or ``parquet`` with
``data_files``, a local script directory, or a name on the hub, fetched by the library). The
documents of ``split`` are read from ``text_field``, joined with ``separator`` and split
contiguously into train / validation (/ test) like ``textfile``. The text is held in memory:
for a corpus larger than memory, write the documents to text files and use
``ddkit data build`` and the ``token_file`` data set.

Example (YAML)::

    data:
      dataset: {name: hf_datasets, source: json, data_files: docs.jsonl, text_field: body}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

import ddkit

from .base import TextDataset, split_text


class HFDatasets(TextDataset):
    def __init__(self,
                 source: Annotated[str, Field(description="a save_to_disk directory, a builder (text, json, "
                                                          "parquet, ...) or a data set name")],
                 data_files: Annotated[str | list[str] | None, Field(
                     description="files for a builder such as json or text")] = None,
                 config: Annotated[str | None, Field(description="the data set's configuration name")] = None,
                 split: Annotated[str, Field(description="the split to read")] = "train",
                 text_field: Annotated[str, Field(description="the column holding the text")] = "text",
                 separator: Annotated[str, Field(description="between documents")] = "\n\n",
                 max_documents: Annotated[int | None, Field(ge=1, description="read at most this many")] = None,
                 validation_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.05,
                 test_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.0):
        self.source, self.data_files, self.config, self.split = source, data_files, config, split
        self.text_field, self.separator, self.max_documents = text_field, separator, max_documents
        self.validation_fraction, self.test_fraction = validation_fraction, test_fraction

    def _load(self):
        try:
            import datasets
        except ImportError:
            raise ValueError("the hf_datasets data set needs the datasets package: pip install 'ddkit[datasets]'") from None
        local = Path(self.source).expanduser()
        if (local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if self.split not in loaded:
                    raise ValueError(f"{local} has no split {self.split!r}; it has {', '.join(loaded)}")
                loaded = loaded[self.split]
            return loaded
        return datasets.load_dataset(self.source, self.config, data_files=self.data_files, split=self.split)

    def texts(self) -> dict[str, str]:
        table = self._load()
        if self.text_field not in table.column_names:
            raise ValueError(f"data.dataset.text_field: {self.source} has no column {self.text_field!r}; "
                             f"it has {', '.join(table.column_names)}")
        if self.max_documents is not None:
            table = table.select(range(min(self.max_documents, len(table))))
        documents = table[self.text_field]
        bad = next((i for i, d in enumerate(documents) if not isinstance(d, str)), None)
        if bad is not None:
            raise ValueError(f"data.dataset.text_field: document {bad} of {self.source} holds "
                             f"{type(documents[bad]).__name__}, expected text")
        return split_text(self.separator.join(documents), self.validation_fraction, self.test_fraction)

    def info(self) -> dict:
        return {"source": f"{self.source} ({self.split}, column {self.text_field!r})"}


@ddkit.hookimpl
def register_datasets(register):
    register("hf_datasets", HFDatasets,
             summary="text from a Hugging Face datasets data set (pip install 'ddkit[datasets]'), contiguous split")
