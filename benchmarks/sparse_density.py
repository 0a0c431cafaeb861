"""Where sparse batches stop paying: the first layer's product, sparse against dense, by density.

For each feature density, a batch of random CSR rows is built from a scipy store both ways
(``SparseFeatureStore.batch_rows`` sparse, and densified) and one first-layer product
``x @ W`` runs forward and backward (the weight gradient).  Times are medians of
alternated repeats; the ratio dense / sparse above 1 means sparse is faster.  The
crossover sets ``SPARSE_BATCH_DENSITY`` (gnnzero/data/feature_store.py).

    python benchmarks/sparse_density.py --out benchmarks/results/sparse_density_cpu.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gnnzero.data.feature_store import SparseFeatureStore  # noqa: E402
from gnnzero.models.sparse_input import sparse_product  # noqa: E402
from gnnzero.observe.report import git_commit, markdown_table, run_environment  # noqa: E402

DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


def _step(store: SparseFeatureStore, index: torch.Tensor, weight: torch.Tensor,
          sparse: bool) -> float:
    t0 = time.perf_counter()
    x = store.batch_rows(index, sparse_below=1.0 if sparse else 0.0)
    out = sparse_product(x, weight) if sparse else x @ weight
    out.sum().backward()
    weight.grad = None
    return time.perf_counter() - t0


def measure(rows: int, features: int, hidden: int, density: float, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    matrix = sp.random(rows, features, density=density, format="csr", dtype=np.float32,
                       random_state=rng)
    store = SparseFeatureStore()
    store.put_tensor(matrix, group_name=None, attr_name="x", index=None)
    index = torch.from_numpy(rng.permutation(rows))
    weight = torch.randn(features, hidden, requires_grad=True)
    times = {True: [], False: []}
    for sparse in (True, False):
        _step(store, index, weight, sparse)            # warm-up
    for r in range(repeats):
        for sparse in ((True, False) if r % 2 == 0 else (False, True)):
            times[sparse].append(_step(store, index, weight, sparse))
    sparse_s, dense_s = statistics.median(times[True]), statistics.median(times[False])
    return {"rows": rows, "features": features, "hidden": hidden, "density": density,
            "sparse_ms": round(1e3 * sparse_s, 2), "dense_ms": round(1e3 * dense_s, 2),
            "dense_over_sparse": round(dense_s / sparse_s, 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=18_333)
    p.add_argument("--features", type=int, nargs="+", default=[500, 6805])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    results = [measure(args.rows, f, args.hidden, d, args.repeats)
               for f in args.features for d in DENSITIES]
    env = run_environment(torch.device("cpu"))
    columns = ["features", "density", "sparse_ms", "dense_ms", "dense_over_sparse"]
    text = (f"# First-layer product: sparse vs dense batches by density\n\n"
            f"Device: {env['device']}; commit {git_commit()}; torch {env['torch']}.\n"
            f"Command: `python benchmarks/sparse_density.py {' '.join(argv or sys.argv[1:])}`\n"
            f"{args.rows} rows, hidden {args.hidden}; batch built from a scipy CSR store, "
            f"then `x @ W` forward + weight gradient; median of {args.repeats} alternated "
            f"repeats.\n\n" + markdown_table(results, columns) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
