"""Neighbour sampling from the mapped CSR against PyG's ``NeighborLoader``: time per batch and
the private memory each needs, on a prepared synthetic graph.

    .venv/bin/python benchmarks/neighbour_sampling.py --nodes 200000 \\
        --out benchmarks/results/neighbour_sampling_cpu

Both sample the same seed batches (``--batch-size`` seeds, fan-outs ``--num-neighbors``) from
the same prepared directory; PyG's loader gets the int64 ``edge_index`` it needs (built from the
mapped CSR, as the loader did before), ours reads the int32 arrays in place.  Timed in
alternated rounds.  Private memory: the bytes of the int64 tensors PyG's path keeps
(``edge_index`` and its sampler's CSC), which the mapped CSR sampler does not build.
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-neighbors", default="10,10")
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

        from torch_geometric.loader import NeighborLoader
        from torch_geometric.sampler import NeighborSampler

        structure = mapped.structure()          # the int64 edge_index PyG's sampler needs
        sampler = NeighborSampler(structure, num_neighbors=fan_outs)   # its CSC copy
        held = [structure.edge_index, sampler.colptr, sampler.row, sampler.perm]
        pyg_private = sum(t.numel() * t.element_size() for t in held if t is not None)

        def pyg_round() -> float:
            start = time.perf_counter()
            loader = NeighborLoader(structure, num_neighbors=fan_outs,
                                    batch_sampler=[s.tolist() for s in seeds],
                                    neighbor_sampler=sampler)
            for _ in loader:
                pass
            return (time.perf_counter() - start) / args.batches

        sizes: list[int] = []

        def ours_round() -> float:
            start = time.perf_counter()
            sizes[:] = [sample_neighbourhood(topology, s, fan_outs,
                                             np.random.default_rng(i)).num_nodes
                        for i, s in enumerate(seeds)]
            return (time.perf_counter() - start) / args.batches

        times = {"pyg": [], "ours": []}
        for r in range(args.rounds):
            for name in (("pyg", "ours") if r % 2 == 0 else ("ours", "pyg")):
                times[name].append((pyg_round if name == "pyg" else ours_round)())
        rows = [{"sampler": "PyG NeighborLoader (int64 edge_index + CSC)",
                 "ms_per_batch": round(1e3 * statistics.median(times["pyg"]), 2),
                 "private_bytes": pyg_private, "private": format_bytes(pyg_private)},
                {"sampler": "gnnzero CSR sampler (mapped int32)",
                 "ms_per_batch": round(1e3 * statistics.median(times["ours"]), 2),
                 "private_bytes": 0, "private": format_bytes(0)}]
        edges = mapped.num_edges
    from gnnzero.observe.report import markdown_table, run_environment

    environment = run_environment(torch.device("cpu"))
    flags = " ".join(argv or sys.argv[1:])
    text = (f"# Neighbour sampling: mapped CSR vs PyG NeighborLoader\n\n"
            f"{args.nodes:,} nodes, {edges:,} directed edges (synthetic, prepared, int32 "
            f"indices); {args.batches} batches of {args.batch_size} seeds, fan-outs "
            f"{fan_outs}, {statistics.mean(sizes):,.0f} nodes a batch on average; median of "
            f"{args.rounds} alternated rounds; torch threads {torch.get_num_threads()}. "
            f"Private: bytes of the int64 tensors PyG's path holds per rank (edge_index and "
            f"its sampler's CSC); the CSR sampler holds nothing beyond each batch. "
            f"{environment['device']}; commit {environment['git_commit']}.\n\n"
            f"Command: `.venv/bin/python benchmarks/neighbour_sampling.py {flags}`\n\n"
            f"{markdown_table(rows, ['sampler', 'ms_per_batch', 'private'])}\n")
    write_result(Path(args.out), {"rows": rows, "environment": environment}, text)


if __name__ == "__main__":
    main()
