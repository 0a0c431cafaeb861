"""The hidden-edge split of link prediction: PyG's ``RandomLinkSplit``, undirected, seeded.

Validation and test edges are removed (both directions) from the graph the model
passes messages over; the training positives are the remaining edges, one
direction each.  Validation and test carry one sampled non-edge per positive.
As in PyG's split, validation passes messages over the training edges and test over
the training and validation edges (:func:`test_graph`); no test edge is ever a
message.  Every rank computes the same split from the same seed.
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..errors import GnnZeroError
from .csr import Topology
from .datasets import GraphDataset


@dataclass
class EdgeSet:
    """Positive edges and sampled non-edges of one split, ``[2, *]`` int64 global ids."""

    pos: Tensor
    neg: Tensor

    def pairs(self) -> tuple[Tensor, Tensor]:
        """All pairs and their 0/1 labels (positives first)."""
        return (torch.cat([self.pos, self.neg], dim=1),
                torch.cat([torch.ones(self.pos.size(1)), torch.zeros(self.neg.size(1))]))


@dataclass
class LinkSplit:
    """What link prediction trains and evaluates on, beside the message-passing graph."""

    train_pos: Tensor     # [2, P] one direction per undirected training edge
    val: EdgeSet
    test: EdgeSet
    directed_input: bool  # the input graph lacked some reverse edges (they were added)
    test_topology: Topology   # training + validation edges: test-time message passing
    _test_graph: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"directed_input": self.directed_input,
                "train_edges": int(self.train_pos.size(1)),
                "val_edges": int(self.val.pos.size(1)), "test_edges": int(self.test.pos.size(1)),
                "val_negatives": int(self.val.neg.size(1)),
                "test_negatives": int(self.test.neg.size(1))}


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's and Python's global generators for PyG code that draws from them
    (``RandomLinkSplit``, ``negative_sampling`` uses ``random.sample``), and put both
    streams back afterwards."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def _undirected(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, bool]:
    from torch_geometric.utils import is_undirected, remove_self_loops, to_undirected

    edge_index, _ = remove_self_loops(edge_index)
    if is_undirected(edge_index, num_nodes=num_nodes):
        return edge_index, False
    return to_undirected(edge_index, num_nodes=num_nodes), True


def _info_for(dataset: GraphDataset) -> dict:
    """``dataset.info`` for the same nodes on other edges: its cached edge list and METIS
    parts describe the old edges, so they go."""
    return {k: v for k, v in dataset.info.items() if k not in ("_edge_index", "partitions_dir")}


def check_split_sizes(num_edges: int, val_fraction: float, test_fraction: float) -> None:
    """Refuse fractions that leave a split of the ``num_edges`` undirected edges empty
    (RandomLinkSplit's rounding: ``int(fraction * num_edges)``)."""
    val, test = int(val_fraction * num_edges), int(test_fraction * num_edges)
    if min(val, test, num_edges - val - test) < 1:
        raise GnnZeroError(
            f"--task link: the graph has {num_edges} undirected edges, too few to hide "
            f"{val_fraction:g} / {test_fraction:g} of them for validation / test ({val} / "
            f"{test} edges, {num_edges - val - test} left to train); use a graph with more "
            f"edges or larger --val-fraction / --test-fraction")


def split_edges(dataset: GraphDataset, val_fraction: float, test_fraction: float,
                seed: int) -> GraphDataset:
    """``dataset`` with its validation and test edges hidden: the returned dataset's
    topology is the training graph and its ``link_split`` holds the edge sets.

    Self-loops are dropped (a pair of a node with itself is no link to predict); a
    directed input is made undirected first, as the split is over undirected edges.
    """
    from torch_geometric.transforms import RandomLinkSplit

    edge_index, directed = _undirected(dataset.edge_index, dataset.num_nodes)
    num_undirected = int((edge_index[0] < edge_index[1]).sum())
    check_split_sizes(num_undirected, val_fraction, test_fraction)
    split = RandomLinkSplit(num_val=val_fraction, num_test=test_fraction, is_undirected=True,
                            add_negative_train_samples=False, split_labels=True)
    with seeded_global_rng(seed):
        train, val, test = split(Data(edge_index=edge_index, num_nodes=dataset.num_nodes))
    topology = Topology.from_edge_index(train.edge_index, dataset.num_nodes)
    link = LinkSplit(train_pos=train.pos_edge_label_index,
                     val=EdgeSet(val.pos_edge_label_index, val.neg_edge_label_index),
                     test=EdgeSet(test.pos_edge_label_index, test.neg_edge_label_index),
                     directed_input=directed,
                     test_topology=Topology.from_edge_index(test.edge_index, dataset.num_nodes))
    return replace(dataset, topology=topology, info=_info_for(dataset), link_split=link)


def test_graph(dataset: GraphDataset) -> GraphDataset:
    """The graph test edges are scored on: ``dataset`` (the training graph) with the
    validation edges added back, as PyG's ``RandomLinkSplit`` hands it out; built once."""
    split = dataset.link_split
    if split._test_graph is None:
        split._test_graph = replace(dataset, topology=split.test_topology,
                                    info=_info_for(dataset))
    return split._test_graph
