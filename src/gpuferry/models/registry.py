"""The known models: name -> architecture, native network scale and the scales we can deliver."""

from __future__ import annotations

from dataclasses import dataclass

from gpuferry.errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    """One Real-ESRGAN model as users name it.

    ``network_scales`` are scales the network itself produces (an ncnn .param exists for each);
    ``scales`` are the output scales offered. A scale that is not a network scale is delivered by
    running the largest network scale and resizing down with Lanczos: an x4-only network must never
    be run "at scale 2" inside the network (it garbles the picture).
    """

    name: str
    architecture: str
    network_scales: tuple[int, ...]
    scales: tuple[int, ...]
    description: str
    default_scale: int

    def ncnn_stem(self, network_scale: int) -> str:
        """File stem of the ncnn .param/.bin pair for a network scale."""
        if self.architecture == "srvgg-compact":
            return f"{self.name}-x{network_scale}"
        return self.name


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="realesr-animevideov3",
            architecture="srvgg-compact",
            network_scales=(2, 3, 4),
            scales=(2, 3, 4),
            description="small and fast; made for animation, good on most video",
            default_scale=2,
        ),
        ModelSpec(
            name="realesrgan-x4plus",
            architecture="rrdbnet",
            network_scales=(4,),
            scales=(2, 3, 4),
            description="general photos and live action; about 29x slower than animevideov3",
            default_scale=4,
        ),
        ModelSpec(
            name="realesrgan-x4plus-anime",
            architecture="rrdbnet",
            network_scales=(4,),
            scales=(2, 3, 4),
            description="anime stills (6-block RRDBNet); slower than animevideov3",
            default_scale=4,
        ),
    )
}

DEFAULT_MODEL = "realesr-animevideov3"


def get_model(name: str) -> ModelSpec:
    """Look a model up by name; an unknown name is a usage error listing what exists."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UsageError(f"unknown model {name!r}; known models: {known}", step="model") from None


def resolve_scale(spec: ModelSpec, scale: int) -> int:
    """The network scale to run for an output scale, or a usage error naming the scales offered."""
    if scale not in spec.scales:
        offered = ", ".join(f"x{s}" for s in spec.scales)
        raise UsageError(
            f"model {spec.name} has no x{scale}; it offers {offered}",
            step="model",
        )
    if scale in spec.network_scales:
        return scale
    return max(spec.network_scales)
