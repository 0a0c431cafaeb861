"""``python -m gnnzero.prepare --dataset <name|file> --out DIR [--num-parts P ...]``.

Writes one prepared directory (see :mod:`gnnzero.data.prepared`) that every rank of
``deepspeed launch/train.py --dataset DIR`` maps read-only.  Prepare it once on
shared storage, or once per node; a second prepare of the same ``--out`` waits for
the first and keeps its copy.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from .data.options import DataConfig
from .data.prepared import STORAGE_DTYPES, prepare, read_manifest, source_from_dataset
from .errors import GnnZeroError, exit_on_user_error
from .utils.settings import add_arguments, check_settings, section_from_args, setting

LAYOUTS = {"auto": None, "dense": False, "sparse": True}


@dataclass(kw_only=True)
class PrepareOptions:
    """Where the prepared directory goes and how it stores the graph."""

    out: Optional[str] = setting(None, "the prepared directory to write (required)",
                                 allowed="a new folder", none_means="refused")
    num_parts: Optional[list[int]] = setting(None, "comma-separated METIS part counts to "
                                                   "partition for (Cluster-GCN)", low=1,
                                             none_means="none now; computed on first use")
    feature_dtype: str = setting("float32", "storage dtype of the feature values (rows are "
                                            "read back as float32)",
                                 choices=tuple(STORAGE_DTYPES))
    seed: int = setting(0, "seed of the synthetic graph (the same as the run's --seed)", low=0)

    def __post_init__(self) -> None:
        check_settings(self)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gnnzero.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser.add_argument_group("source"), DataConfig, "data.")
    add_arguments(parser.add_argument_group("output"), PrepareOptions, "out.")
    return parser


def parse(argv: Optional[Sequence[str]] = None) -> tuple[DataConfig, PrepareOptions]:
    namespace = build_parser().parse_args(argv)
    data = section_from_args(DataConfig, namespace, "data.")
    options = section_from_args(PrepareOptions, namespace, "out.")
    if not options.out:
        raise GnnZeroError("--out is required: the folder to write the prepared graph to")
    if data.feature_store == "mmap":
        raise GnnZeroError("--feature-store mmap does not apply to prepare (the directory is "
                           "always mapped); choose auto, dense or sparse for the layout")
    if data.pca_components:
        raise GnnZeroError("--pca-components applies at training time; prepare the raw "
                           "features and pass --pca-components to launch/train.py")
    return data, options


def run_prepare(data: DataConfig, options: PrepareOptions) -> dict:
    """Prepare ``options.out`` from ``data``; return the manifest."""
    from .data.datasets import check_dataset_source, load_in_memory, user_file_source
    from .data.hetero import is_hetero_source

    check_dataset_source(data.dataset, data.data_root)
    if is_hetero_source(data.dataset):
        raise GnnZeroError(f"--dataset {data.dataset} is heterogeneous; a prepared directory "
                           f"holds one homogeneous graph: train on it directly with "
                           f"launch/train.py --dataset {data.dataset} --loader neighbor")

    def source():
        if data.dataset.endswith((".pt", ".npz")):
            return user_file_source(data.dataset)
        return source_from_dataset(load_in_memory(data.dataset, data.data_root, data.num_nodes,
                                                  options.seed, **data.synthetic_shape()))

    start = time.perf_counter()
    num_parts = tuple(options.num_parts or ())
    built = prepare(options.out, source, storage=options.feature_dtype,
                    sparse=LAYOUTS[data.feature_store], num_parts=num_parts)
    manifest = read_manifest(options.out)
    print(json.dumps({"out": options.out, "prepared_by_this_call": built,
                      "seconds": round(time.perf_counter() - start, 2),
                      "num_nodes": manifest["num_nodes"], "num_edges": manifest["num_edges"],
                      "features": manifest["features"], "partitions": manifest["partitions"],
                      "fingerprint": manifest["fingerprint"]}), flush=True)
    return manifest


@exit_on_user_error
def main(argv: Optional[Sequence[str]] = None) -> None:
    run_prepare(*parse(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
