"""gnnzero: memory-optimised training of large GNNs with PyG and DeepSpeed."""
__version__ = "0.1.0"
