"""Model registry: which Real-ESRGAN models exist, their architecture, scales and weight files."""

from gpuferry.models.registry import MODELS, ModelSpec, get_model, resolve_scale
from gpuferry.models.weights import NcnnWeights, locate_ncnn_weights

__all__ = ["MODELS", "ModelSpec", "NcnnWeights", "get_model", "locate_ncnn_weights", "resolve_scale"]
