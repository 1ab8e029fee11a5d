"""Load a user's own model file (--model-path): .pth/.pt/.ckpt or .safetensors, architecture detected.

Our own architectures come first; when spandrel is importable it is asked about anything else. Every
failure (not a model, truncated, unknown architecture, wrong shapes) is a BadInputError naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from gpuferry.errors import BadInputError
from gpuferry.models.architectures import build_architecture, detect_architecture
from gpuferry.models.architectures.base import LoadedModel, ModelProfile, count_parameters

#: containers training code wraps a state dict in (Real-ESRGAN prefers params_ema)
_WRAPPER_KEYS = (
    "params_ema",
    "params",
    "state_dict",
    "model_state_dict",
    "model",
    "net_g",
    "generator",
)
#: memory planning for architectures only spandrel knows: generous, so the preflight errs safe
_UNKNOWN_ACTIVATIONS_PER_OUTPUT_PIXEL = 256
_UNKNOWN_TILE_PAD = 32


def _refuse(path: Path, cause: str) -> BadInputError:
    return BadInputError(
        cause,
        path=str(path),
        step="load model",
        hints=[
            "Pass a Real-ESRGAN .pth or .safetensors (SRVGGNetCompact or RRDBNet; others need spandrel).",
            "Re-download the file if it is truncated, or use a built-in model (--model).",
        ],
    )


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _refuse(
            path, f"not a readable .safetensors file (truncated or corrupt?): {exc}"
        ) from None


def _read_pickle(path: Path) -> Any:
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        AttributeError,
        TypeError,
        KeyError,
        IndexError,
    ) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(
            path,
            f"not a readable PyTorch model file (truncated, corrupt or not a model): {first_line}",
        ) from None


def _unwrap_state_dict(path: Path, content: Any) -> dict[str, Any]:
    import torch

    for _ in range(3):  # containers nest at most a couple of levels
        if isinstance(content, dict):
            inner = next(
                (content[key] for key in _WRAPPER_KEYS if isinstance(content.get(key), dict)), None
            )
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in content.values()):
                content = inner
                continue
        break
    if not isinstance(content, dict) or not content:
        raise _refuse(path, f"does not contain a model state dict (found {type(content).__name__})")
    tensors = {str(key): value for key, value in content.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise _refuse(path, "does not contain any weight tensors, so it is not a model")
    prefix = "module."
    if all(key.startswith(prefix) for key in tensors):
        tensors = {key[len(prefix) :]: value for key, value in tensors.items()}
    return {
        key: value.float() if value.is_floating_point() else value for key, value in tensors.items()
    }


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The weight tensors in a .pth/.pt/.ckpt/.safetensors file, unwrapped from training containers."""
    path = Path(path)
    if not path.is_file():
        raise _refuse(path, "model file not found")
    if path.stat().st_size == 0:
        raise _refuse(path, "model file is empty")
    content = (
        _read_safetensors(path) if path.suffix.lower() == ".safetensors" else _read_pickle(path)
    )
    return _unwrap_state_dict(path, content)


@lru_cache(maxsize=1)
def _spandrel_loader() -> Any | None:
    """spandrel's ModelLoader class, or None: it imports torchvision, which can fail in many ways."""
    try:
        from spandrel import ModelLoader
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return ModelLoader


def _load_with_spandrel(path: Path, state_dict: dict[str, Any]) -> LoadedModel | None:
    loader = _spandrel_loader()
    if loader is None:
        return None
    import torch
    from torch import nn

    try:
        descriptor = loader().load_from_state_dict(state_dict)
    except Exception:  # noqa: BLE001 - spandrel raises its own errors for unknown architectures
        return None
    if (
        getattr(descriptor, "input_channels", 3) != 3
        or getattr(descriptor, "output_channels", 3) != 3
    ):
        raise _refuse(path, "the model does not take and return 3-channel RGB images")

    class SpandrelNetwork(nn.Module):
        """Calls the descriptor, which pads inputs to the sizes its architecture requires."""

        def __init__(self) -> None:
            super().__init__()
            self.network = descriptor.model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return descriptor(x)

    scale = int(descriptor.scale)
    profile = ModelProfile(
        architecture=f"spandrel:{descriptor.architecture.name}",
        scale=scale,
        parameter_count=count_parameters(state_dict),
        activation_elements_per_pixel=_UNKNOWN_ACTIVATIONS_PER_OUTPUT_PIXEL * scale * scale,
        tile_pad=_UNKNOWN_TILE_PAD,
        source=str(path),
    )
    return LoadedModel(module=SpandrelNetwork().eval(), profile=profile)


def load_model_file(path: str | Path) -> LoadedModel:
    """Load --model-path: detect the architecture and scale from the state dict and build the network."""
    path = Path(path)
    state_dict = read_state_dict(path)
    architecture = detect_architecture(state_dict)
    if architecture is not None:
        try:
            return build_architecture(architecture, state_dict, source=str(path))
        except (RuntimeError, ValueError, KeyError) as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise _refuse(
                path, f"looks like {architecture} but its weights do not fit: {first_line}"
            ) from None
    loaded = _load_with_spandrel(path, state_dict)
    if loaded is not None:
        return loaded
    sample = ", ".join(sorted(state_dict)[:4])
    extra = "" if _spandrel_loader() is not None else " (install spandrel for more architectures)"
    raise _refuse(path, f"unknown model architecture{extra}; first keys: {sample}")
