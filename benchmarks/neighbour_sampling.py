"""Sampling from the mapped CSR against PyG's samplers (``NeighborLoader``, or with
``--sampler saint-rw`` ``GraphSAINTRandomWalkSampler``): time per batch and the private memory
each needs, on a prepared synthetic graph.

    .venv/bin/python benchmarks/neighbour_sampling.py --nodes 200000 \\
        --out benchmarks/results/neighbour_sampling_cpu
    .venv/bin/python benchmarks/neighbour_sampling.py --nodes 200000 --sampler saint-rw \\
        --batch-size 2000 --out benchmarks/results/saint_sampling_cpu

Both sample the same seed batches (``--batch-size`` seeds, fan-outs ``--num-neighbors``) from
the same prepared directory; PyG's loader gets the int64 ``edge_index`` it needs (built from the
mapped CSR, as the loader did before), ours reads the int32 arrays in place.  Timed in
alternated rounds.  Private memory: the bytes of the tensors PyG's path keeps per rank
(``edge_index`` and its sampler's CSC, or GraphSAINT's ``SparseTensor`` and its ``E``-sized
normalisation), which the mapped CSR samplers do not build (their norms are a mapped file).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.tables import write_result  # noqa: E402
from gnnzero.data import load_dataset  # noqa: E402
from gnnzero.data.neighbour_sampling import sample_neighbourhood  # noqa: E402
from gnnzero.data.prepared import open_prepared, prepare, source_from_dataset  # noqa: E402
from gnnzero.observe.memory import format_bytes  # noqa: E402


def _neighbor(args, structure, topology, seeds):
    """PyG ``NeighborLoader`` (its sampler's int64 CSC) vs :func:`sample_neighbourhood`."""
    from torch_geometric.loader import NeighborLoader
    from torch_geometric.sampler import NeighborSampler

    fan_outs = [int(k) for k in args.num_neighbors.split(",")]
    sampler = NeighborSampler(structure, num_neighbors=fan_outs)   # its CSC copy
    held = [structure.edge_index, sampler.colptr, sampler.row, sampler.perm]
    sizes: list[int] = []

    def pyg_round() -> float:
        start = time.perf_counter()
        loader = NeighborLoader(structure, num_neighbors=fan_outs,
                                batch_sampler=[s.tolist() for s in seeds], neighbor_sampler=sampler)
        for _ in loader:
            pass
        return (time.perf_counter() - start) / len(seeds)

    def ours_round() -> float:
        start = time.perf_counter()
        sizes[:] = [sample_neighbourhood(topology, s, fan_outs, np.random.default_rng(i)).num_nodes
                    for i, s in enumerate(seeds)]
        return (time.perf_counter() - start) / len(seeds)

    return pyg_round, ours_round, _bytes(held), sizes


def _saint_rw(args, structure, topology, seeds):
    """PyG ``GraphSAINTRandomWalkSampler`` (a ``SparseTensor`` of the whole graph) vs
    :class:`~gnnzero.data.saint.SaintSampler`; sampling only (the norms are counted, not timed)."""
    from torch_geometric.loader import GraphSAINTRandomWalkSampler

    from gnnzero.data.saint import SaintSampler

    torch.manual_seed(0)
    pyg = GraphSAINTRandomWalkSampler(structure, batch_size=args.batch_size,
                                      walk_length=args.walk_length, num_steps=len(seeds),
                                      sample_coverage=0, log=False)
    storage = pyg.adj.storage
    held = [structure.edge_index, storage.row(), storage.col(), storage.value(), storage.rowptr()]
    norms = 4 * (structure.num_nodes + structure.edge_index.size(1))   # its float32 norms
    ours = SaintSampler(topology, "saint-rw", args.batch_size, args.walk_length)
    sizes: list[int] = []

    def pyg_round() -> float:
        start = time.perf_counter()
        for step in range(len(seeds)):
            pyg._collate([pyg[step]])
        return (time.perf_counter() - start) / len(seeds)

    def ours_round() -> float:
        start = time.perf_counter()
        sizes[:] = [ours.batch(np.random.default_rng(i), None).num_nodes
                    for i in range(len(seeds))]
        return (time.perf_counter() - start) / len(seeds)

    return pyg_round, ours_round, _bytes(held) + norms, sizes


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


SAMPLERS = {"neighbor": _neighbor, "saint-rw": _saint_rw}
NAMES = {"neighbor": ("PyG NeighborLoader (int64 edge_index + CSC)",
                      "gnnzero CSR sampler (mapped int32)"),
         "saint-rw": ("PyG GraphSAINTRandomWalkSampler (int64 edge_index + SparseTensor + norms)",
                      "gnnzero CSR GraphSAINT sampler (mapped int32, mapped norms)")}
PRIVATE = {"neighbor": "edge_index and its sampler's CSC",
           "saint-rw": "edge_index, the sampler's SparseTensor and its float32 node and edge "
                       "norms"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-neighbors", default="10,10")
    p.add_argument("--sampler", default="neighbor", choices=("neighbor", "saint-rw"))
    p.add_argument("--walk-length", type=int, default=2)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks/results/neighbour_sampling_cpu"))
    args = p.parse_args(argv)
    fan_outs = [int(k) for k in args.num_neighbors.split(",")]
    with tempfile.TemporaryDirectory() as work:
        graph = load_dataset("synthetic", num_nodes=args.nodes, seed=0)
        assert prepare(f"{work}/g", lambda: source_from_dataset(graph))
        mapped = open_prepared(f"{work}/g")
        topology = mapped.topology
        rng = np.random.default_rng(0)
        seeds = [rng.choice(mapped.num_nodes, args.batch_size, replace=False)
                 for _ in range(args.batches)]

        structure = mapped.structure()          # the int64 edge_index PyG's samplers need
        pyg_round, ours_round, pyg_private, sizes = SAMPLERS[args.sampler](
            args, structure, topology, seeds)

        times = {"pyg": [], "ours": []}
        for r in range(args.rounds):
            for name in (("pyg", "ours") if r % 2 == 0 else ("ours", "pyg")):
                times[name].append((pyg_round if name == "pyg" else ours_round)())
        pyg_name, ours_name = NAMES[args.sampler]
        rows = [{"sampler": pyg_name,
                 "ms_per_batch": round(1e3 * statistics.median(times["pyg"]), 2),
                 "private_bytes": pyg_private, "private": format_bytes(pyg_private)},
                {"sampler": ours_name,
                 "ms_per_batch": round(1e3 * statistics.median(times["ours"]), 2),
                 "private_bytes": 0, "private": format_bytes(0)}]
        edges = mapped.num_edges
    from gnnzero.observe.report import markdown_table, run_environment

    environment = run_environment(torch.device("cpu"))
    flags = " ".join(argv or sys.argv[1:])
    what = (f"{args.batch_size} seeds, fan-outs {fan_outs}" if args.sampler == "neighbor" else
            f"{args.batch_size} random-walk roots, walk length {args.walk_length}")
    text = (f"# {pyg_name.split(' (')[0]} vs the mapped-CSR sampler\n\n"
            f"{args.nodes:,} nodes, {edges:,} directed edges (synthetic, prepared, int32 "
            f"indices); {args.batches} batches of {what}, {statistics.mean(sizes):,.0f} "
            f"nodes a batch on average; median of {args.rounds} alternated rounds; torch "
            f"threads {torch.get_num_threads()}. Private: bytes of the tensors PyG's path "
            f"holds per rank ({PRIVATE[args.sampler]}); the CSR sampler holds nothing beyond "
            f"each batch. "
            f"{environment['device']}; commit {environment['git_commit']}.\n\n"
            f"Command: `.venv/bin/python benchmarks/neighbour_sampling.py {flags}`\n\n"
            f"{markdown_table(rows, ['sampler', 'ms_per_batch', 'private'])}\n")
    write_result(Path(args.out), {"rows": rows, "environment": environment}, text)


if __name__ == "__main__":
    main()
