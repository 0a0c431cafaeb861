"""Datasets, feature stores, partitioning and rank-sharded loaders."""
from .datasets import GraphDataset, load_dataset
from .feature_store import MatrixFeatureStore
from .loaders import build_loader
from .options import LOADER_KINDS, DataConfig, LoaderOptions

__all__ = ["GraphDataset", "load_dataset", "MatrixFeatureStore", "LOADER_KINDS", "DataConfig",
           "LoaderOptions", "build_loader"]
