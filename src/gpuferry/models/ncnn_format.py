"""Read ncnn's .param (layer graph) and .bin (weights) files into plain Python and numpy objects.

The .bin holds the weights of the layers in .param order. A Convolution's weight starts with a
4-byte tag (0x01306B47: fp16 values follow, padded to 4 bytes; 0: fp32), its bias is raw fp32; a
PReLU's slopes are raw fp32. Reading must consume every byte, which is how a wrong guess shows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpuferry.errors import BadInputError

PARAM_MAGIC = "7767517"
FP16_TAG = 0x01306B47
FP32_TAG = 0
#: ncnn layer types that carry no weights in the .bin
WEIGHTLESS_TYPES = frozenset(
    {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "ReLU", "Sigmoid"}
)
#: a key below this is an array parameter: -23300 - key, value "count,v1,v2,..."
_ARRAY_KEY_BASE = -23300


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a .param file: type, name, input and output blob names, numbered parameters."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, int | float | tuple[int | float, ...]] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        value = self.params.get(key, default)
        if not isinstance(value, int | float):
            raise BadInputError(
                f"layer {self.name}: parameter {key} is an array, expected a number"
            )
        return int(value)

    def float_param(self, key: int, default: float = 0.0) -> float:
        value = self.params.get(key, default)
        if not isinstance(value, int | float):
            raise BadInputError(
                f"layer {self.name}: parameter {key} is an array, expected a number"
            )
        return float(value)

    def array_param(self, key: int) -> tuple[int | float, ...]:
        value = self.params.get(key, ())
        return value if isinstance(value, tuple) else (value,)


@dataclass(frozen=True)
class NcnnGraph:
    """A parsed .param file: its layers in order."""

    path: Path
    layers: tuple[NcnnLayer, ...]

    def of_type(self, layer_type: str) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.type == layer_type]

    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.type] = counts.get(layer.type, 0) + 1
        return counts


@dataclass(frozen=True)
class LayerWeights:
    """The arrays one layer holds in the .bin (fp32 numpy, in torch's layout)."""

    layer: NcnnLayer
    arrays: dict[str, np.ndarray]


def _number(text: str) -> int | float:
    if any(ch in text for ch in ".eE") and not text.lstrip("-").isdigit():
        return float(text)
    return int(text)


def _parse_param_value(key: int, text: str) -> tuple[int, int | float | tuple[int | float, ...]]:
    if key <= _ARRAY_KEY_BASE:
        items = text.split(",")
        count = int(items[0])
        values = tuple(_number(item) for item in items[1 : 1 + count])
        if len(values) != count:
            raise ValueError(f"array parameter {key} announces {count} values, has {len(values)}")
        return _ARRAY_KEY_BASE - key, values
    return key, _number(text)


def parse_param(path: str | Path) -> NcnnGraph:
    """Parse an ncnn .param text file; anything malformed is a BadInputError naming the file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(
            f"cannot read ncnn .param file: {exc}", path=str(path), step="load model"
        ) from None
    lines = [line for line in lines if line.strip()]
    if not lines or lines[0].strip() != PARAM_MAGIC:
        raise BadInputError(
            f"not an ncnn .param file (first line should be {PARAM_MAGIC})",
            path=str(path),
            step="load model",
        )
    layers = []
    try:
        layer_count = int(lines[1].split()[0])
        for number, line in enumerate(lines[2:], start=3):
            fields = line.split()
            layer_type, name = fields[0], fields[1]
            n_in, n_out = int(fields[2]), int(fields[3])
            inputs = tuple(fields[4 : 4 + n_in])
            outputs = tuple(fields[4 + n_in : 4 + n_in + n_out])
            if len(inputs) != n_in or len(outputs) != n_out:
                raise ValueError(f"line {number}: blob counts do not match")
            params = {}
            for item in fields[4 + n_in + n_out :]:
                key_text, _, value_text = item.partition("=")
                key, value = _parse_param_value(int(key_text), value_text)
                params[key] = value
            layers.append(NcnnLayer(layer_type, name, inputs, outputs, params))
    except (IndexError, ValueError) as exc:
        raise BadInputError(
            f"malformed ncnn .param file: {exc}", path=str(path), step="load model"
        ) from None
    if len(layers) != layer_count:
        raise BadInputError(
            f"ncnn .param announces {layer_count} layers but lists {len(layers)}",
            path=str(path),
            step="load model",
        )
    return NcnnGraph(path=path, layers=tuple(layers))


class _BinReader:
    """Sequential reader over the .bin bytes that knows ncnn's tagged and raw blob encodings."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.offset = 0
        self.path = path

    def _take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise BadInputError(
                f"ncnn .bin ends early while reading {what} (needs {size} bytes at offset {self.offset})",
                path=str(self.path),
                step="load model",
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        (tag,) = struct.unpack("<I", self._take(4, what))
        if tag == FP16_TAG:
            values = np.frombuffer(self._take(2 * count, what), dtype="<f2").astype(np.float32)
            self._take((-2 * count) % 4, what)  # fp16 blobs are padded to a multiple of 4 bytes
            return values
        if tag == FP32_TAG:
            return self.raw_fp32(count, what)
        raise BadInputError(
            f"unsupported ncnn weight encoding tag 0x{tag:08X} in {what} (only fp16 and fp32 are supported)",
            path=str(self.path),
            step="load model",
        )


def _convolution_weights(layer: NcnnLayer, reader: _BinReader) -> dict[str, np.ndarray]:
    out_channels = layer.int_param(0)
    kernel_w = layer.int_param(1)
    kernel_h = layer.int_param(11, kernel_w)
    weight_count = layer.int_param(6)
    if layer.int_param(8) != 0:
        raise BadInputError(
            f"layer {layer.name}: int8-quantised convolutions are not supported", step="load model"
        )
    if layer.int_param(7, 1) != 1:
        raise BadInputError(
            f"layer {layer.name}: grouped convolutions are not supported", step="load model"
        )
    per_output = out_channels * kernel_h * kernel_w
    if per_output == 0 or weight_count % per_output:
        raise BadInputError(
            f"layer {layer.name}: weight count {weight_count} does not fit its shape",
            step="load model",
        )
    channels = weight_count // per_output
    weight = reader.tagged(weight_count, f"{layer.name} weight")
    arrays = {"weight": weight.reshape(out_channels, channels, kernel_h, kernel_w)}
    if layer.int_param(5):
        arrays["bias"] = reader.raw_fp32(out_channels, f"{layer.name} bias")
    return arrays


def read_weights(graph: NcnnGraph, bin_path: str | Path) -> list[LayerWeights]:
    """Read the .bin that belongs to ``graph``: one entry per layer with weights, in order.

    Raises BadInputError when the file is short, carries an unknown encoding, or has bytes left over
    (which means the layout was misread and the weights would be garbage).
    """
    bin_path = Path(bin_path)
    try:
        data = bin_path.read_bytes()
    except OSError as exc:
        raise BadInputError(
            f"cannot read ncnn .bin file: {exc}", path=str(bin_path), step="load model"
        ) from None
    reader = _BinReader(data, bin_path)
    found: list[LayerWeights] = []
    for layer in graph.layers:
        if layer.type == "Convolution":
            found.append(LayerWeights(layer, _convolution_weights(layer, reader)))
        elif layer.type == "PReLU":
            slopes = reader.raw_fp32(layer.int_param(0, 1), f"{layer.name} slopes")
            found.append(LayerWeights(layer, {"weight": slopes}))
        elif layer.type not in WEIGHTLESS_TYPES:
            raise BadInputError(
                f"ncnn layer type {layer.type} ({layer.name}) is not supported",
                path=str(graph.path),
                step="load model",
            )
    if reader.offset != len(data):
        raise BadInputError(
            f"ncnn .bin has {len(data) - reader.offset} bytes left after reading every layer; "
            "it does not belong to this .param",
            path=str(bin_path),
            step="load model",
        )
    return found
