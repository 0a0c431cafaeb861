"""Datasets, feature stores, partitioning and rank-sharded loaders."""
from .datasets import GraphDataset, load_dataset
from .loaders import LOADER_KINDS, LoaderOptions, build_loader

__all__ = ["GraphDataset", "load_dataset", "LOADER_KINDS", "LoaderOptions", "build_loader"]
