"""Frame upscalers behind one small interface (ncnn, resample; torch when installed)."""

from gpuferry.engines.base import Engine, Rescaled, lanczos_resize
from gpuferry.engines.select import EngineChoice, EngineRequest, create_engine

__all__ = ["Engine", "EngineChoice", "EngineRequest", "Rescaled", "create_engine", "lanczos_resize"]
