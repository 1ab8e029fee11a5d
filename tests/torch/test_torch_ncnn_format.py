"""The ncnn .param/.bin reader: every byte of the shipped weights is accounted for; damage is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpuferry.errors import BadInputError
from gpuferry.models.convert import convert_ncnn
from gpuferry.models.ncnn_format import parse_param, read_weights
from gpuferry.models.registry import MODELS, get_model
from gpuferry.models.weights import locate_ncnn_weights


@pytest.mark.parametrize(
    ("name", "scale", "convs", "prelus"),
    [
        ("realesr-animevideov3", 2, 18, 17),
        ("realesr-animevideov3", 4, 18, 17),
        ("realesrgan-x4plus", 4, 351, 0),
        ("realesrgan-x4plus-anime", 4, 96, 0),
    ],
)
def test_shipped_weights_are_read_to_the_last_byte(
    name: str, scale: int, convs: int, prelus: int
) -> None:
    weights = locate_ncnn_weights(get_model(name), scale)
    graph = parse_param(weights.param)
    layers = read_weights(graph, weights.bin)  # raises if any byte is left over
    assert sum(entry.layer.type == "Convolution" for entry in layers) == convs
    assert sum(entry.layer.type == "PReLU" for entry in layers) == prelus


def test_compact_state_dict_has_the_53_entries_of_srvgg() -> None:
    weights = locate_ncnn_weights(MODELS["realesr-animevideov3"], 2)
    state, network_scale, output_scale = convert_ncnn("srvgg-compact", weights.param, weights.bin)
    assert len(state) == 53
    assert (network_scale, output_scale) == (4, 2)
    assert state["body.0.weight"].shape == (64, 3, 3, 3)
    assert state["body.1.weight"].shape == (64,)
    assert state["body.34.weight"].shape == (48, 64, 3, 3)


def test_rrdbnet_structure_read_from_param() -> None:
    weights = locate_ncnn_weights(MODELS["realesrgan-x4plus-anime"], 4)
    state, _, _ = convert_ncnn("rrdbnet", weights.param, weights.bin)
    assert "body.5.rdb3.conv5.weight" in state and "body.6.rdb1.conv1.weight" not in state
    assert state["body.0.rdb1.conv2.weight"].shape == (32, 96, 3, 3)


def _copy_pair(tmp_path: Path, name: str, scale: int) -> tuple[Path, Path]:
    weights = locate_ncnn_weights(get_model(name), scale)
    param, binary = tmp_path / "m.param", tmp_path / "m.bin"
    shutil.copy(weights.param, param)
    shutil.copy(weights.bin, binary)
    return param, binary


def test_truncated_bin_is_refused_naming_the_file(tmp_path: Path) -> None:
    param, binary = _copy_pair(tmp_path, "realesr-animevideov3", 4)
    binary.write_bytes(binary.read_bytes()[:-100])
    with pytest.raises(BadInputError, match="ends early") as caught:
        read_weights(parse_param(param), binary)
    assert str(binary) in str(caught.value)


def test_bin_with_bytes_left_over_is_refused(tmp_path: Path) -> None:
    param, binary = _copy_pair(tmp_path, "realesr-animevideov3", 4)
    binary.write_bytes(binary.read_bytes() + b"\0" * 8)
    with pytest.raises(BadInputError, match="bytes left"):
        read_weights(parse_param(param), binary)


def test_param_without_magic_is_refused(tmp_path: Path) -> None:
    param = tmp_path / "bad.param"
    param.write_text("hello\n1 1\n")
    with pytest.raises(BadInputError, match="not an ncnn .param") as caught:
        parse_param(param)
    assert str(param) in str(caught.value)


def test_wrong_architecture_for_the_graph_is_refused() -> None:
    weights = locate_ncnn_weights(MODELS["realesr-animevideov3"], 4)
    with pytest.raises(BadInputError, match="unexpected ncnn graph"):
        convert_ncnn("rrdbnet", weights.param, weights.bin)
