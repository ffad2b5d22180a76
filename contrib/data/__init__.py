"""Data sets (``dataset`` plugins) and the token splits they produce."""

from .base import DataSplits, Dataset, Split, TextDataset, split_text

__all__ = ["DataSplits", "Dataset", "Split", "TextDataset", "split_text"]
