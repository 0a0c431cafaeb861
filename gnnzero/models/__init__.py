"""Model builders, low-rank / shared layers, and parameter / memory accounting."""
from .accounting import count_parameters, zero_model_state_bytes, zero_memory_table
from .builders import ARCHS, build_model, forward_batch
from .lowrank import LowRankLinear, SharedWeightLinear

__all__ = ["ARCHS", "build_model", "forward_batch", "count_parameters", "zero_model_state_bytes",
           "zero_memory_table", "LowRankLinear", "SharedWeightLinear"]
