"""From a config tree to objects: the one mapping the trainer, inspector, baseline and
benchmarks share (dataset with PCA applied, model, training loader)."""
from __future__ import annotations

import torch

from .config import RunConfig
from .data import GraphDataset, build_loader as _build_loader, load_dataset
from .data.loaders import GraphLoader
from .data.pca import reduce_features
from .models import build_model as _build_model


def build_dataset(cfg: RunConfig) -> GraphDataset:
    """The run's dataset from local files or the generator, features reduced by PCA if asked."""
    d = cfg.data
    dataset = load_dataset(d.dataset, d.data_root, d.num_nodes, cfg.train.seed, d.feature_store,
                           d.cache_dir, **d.synthetic_shape())
    if d.pca_components:
        dataset = reduce_features(dataset, d.pca_components, seed=cfg.train.seed)
    dataset.sparse_batch_density = d.sparse_batch_density
    return dataset


def build_model(cfg: RunConfig, dataset: GraphDataset) -> torch.nn.Module:
    """The run's GNN for ``dataset`` (seed the RNG first for reproducible weights)."""
    m = cfg.model
    return _build_model(m.arch, dataset.num_features, m.hidden, dataset.num_classes, m.layers,
                        share_weights=m.share_weights, rank=m.rank, dropout=m.dropout,
                        norm=m.norm, jk=m.jk, heads=m.heads,
                        activation_checkpointing=m.activation_checkpointing)


def build_loader(cfg: RunConfig, dataset: GraphDataset, rank: int = 0,
                 world_size: int = 1) -> GraphLoader:
    """This rank's training loader."""
    return _build_loader(dataset, cfg.loader, rank, world_size, cfg.train.seed)
