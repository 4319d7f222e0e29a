"""Datasets (lazy, indexable by position), the label ledger, and the registry of sources."""

from activelab.data.base import ArrayDataset, Dataset
from activelab.data.sources import Source, get_source, sources

__all__ = ["ArrayDataset", "Dataset", "Source", "get_source", "sources"]
