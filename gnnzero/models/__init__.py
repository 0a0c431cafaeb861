"""Model builders, low-rank / shared layers, and parameter / memory accounting."""
from .accounting import count_parameters, zero_memory_table, zero_model_state_bytes
from .builders import ARCHS, build_model, forward_batch
from .hetero import HETERO_ARCHS, build_hetero_model
from .importance import pinsage_neighbourhood
from .lowrank import LowRankLinear, SharedWeightLinear

__all__ = ["ARCHS", "HETERO_ARCHS", "build_model", "build_hetero_model", "forward_batch",
           "count_parameters", "zero_model_state_bytes", "zero_memory_table",
           "pinsage_neighbourhood", "LowRankLinear", "SharedWeightLinear"]
