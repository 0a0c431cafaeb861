"""From a config tree to objects: the one mapping the trainer, inspector, baseline and
benchmarks share (dataset with PCA applied, model, training loader)."""
from __future__ import annotations

import torch

from .config import RunConfig
from .errors import GnnZeroError
from .data import GraphDataset, build_loader as _build_loader, load_dataset
from .data.loaders import GraphLoader
from .data.hetero import (HeteroGraphDataset, HeteroNeighborLoader, is_hetero_source,
                          load_hetero, schema_graph)
from .data.link_loaders import build_link_loader
from .data.link_split import split_edges
from .data.pca import reduce_features
from .models import build_hetero_model, build_model as _build_model
from .models.link import build_link_model


def build_dataset(cfg: RunConfig) -> GraphDataset | HeteroGraphDataset:
    """The run's dataset from local files or the generator, features reduced by PCA if asked;
    for link prediction, with the validation and test edges hidden (a seeded split); a
    heterogeneous graph as a :class:`HeteroGraphDataset`."""
    d = cfg.data
    if is_hetero_source(d.dataset):
        return load_hetero(d.dataset, d.target_type, d.num_nodes, cfg.train.seed,
                           **d.synthetic_shape())
    dataset = load_dataset(d.dataset, d.data_root, d.num_nodes, cfg.train.seed, d.feature_store,
                           d.cache_dir, **d.synthetic_shape())
    if d.pca_components:
        dataset = reduce_features(dataset, d.pca_components, seed=cfg.train.seed)
    dataset.sparse_batch_density = d.sparse_batch_density
    _use_categorical(dataset, d)
    if cfg.task.is_link:
        dataset = split_edges(dataset, cfg.task.val_fraction, cfg.task.test_fraction,
                              cfg.train.seed)
    return dataset


def _use_categorical(dataset: GraphDataset, d) -> None:
    """``--categorical``: keep the file's ``x_cat`` ids for the model (batches dense, as the
    embedding is concatenated to ``x``); without it, drop them, saying so."""
    if d.categorical:
        if dataset.categorical is None:
            raise GnnZeroError(f"--categorical: {d.dataset} has no categorical columns; give a "
                               f".pt / .npz file with an integer x_cat array [num_nodes, C] "
                               f"(a prepared directory or --feature-store mmap keeps none)")
        dataset.sparse_batch_density = 0.0
    elif dataset.categorical is not None:
        print(f"note: {d.dataset} holds {dataset.categorical.size(1)} categorical columns "
              f"(x_cat), unused; add --categorical to embed them", flush=True)
        dataset.categorical = None


def build_model(cfg: RunConfig, dataset: GraphDataset) -> torch.nn.Module:
    """The run's GNN for ``dataset`` (seed the RNG first for reproducible weights); for link
    prediction, the GNN (``--embedding-dim`` wide output) is the encoder of a pair decoder."""
    m = cfg.model
    if getattr(dataset, "is_hetero", False):
        return build_hetero_model(m.arch, schema_graph(dataset.data), m.hidden,
                                  dataset.num_classes, m.layers, share_weights=m.share_weights,
                                  rank=m.rank, dropout=m.dropout, norm=m.norm, jk=m.jk,
                                  heads=m.heads)
    out = (cfg.task.embedding_dim or m.hidden) if cfg.task.is_link else dataset.num_classes
    gnn = _build_model(m.arch, dataset.num_features, m.hidden, out, m.layers,
                       share_weights=m.share_weights, rank=m.rank, dropout=m.dropout,
                       norm=m.norm, jk=m.jk, heads=m.heads,
                       activation_checkpointing=m.activation_checkpointing,
                       categorical=(dataset.categorical_vocabulary, m.categorical_dim)
                       if cfg.data.categorical else None)
    return build_link_model(gnn, cfg.task.decoder, out) if cfg.task.is_link else gnn


def build_loader(cfg: RunConfig, dataset: GraphDataset, rank: int = 0,
                 world_size: int = 1) -> GraphLoader:
    """This rank's training loader (node or link batches, as the task needs; heterogeneous
    neighbour batches of the target type's training nodes)."""
    if getattr(dataset, "is_hetero", False):
        return HeteroNeighborLoader(dataset.data, dataset.target, cfg.loader.num_neighbors,
                                    cfg.loader.batch_size, rank, world_size, cfg.train.seed,
                                    opts=cfg.loader)
    if cfg.task.is_link:
        return build_link_loader(dataset, cfg.loader, rank, world_size, cfg.train.seed,
                                 cfg.task.neg_ratio)
    return _build_loader(dataset, cfg.loader, rank, world_size, cfg.train.seed)
