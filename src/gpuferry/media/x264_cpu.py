"""x264 without its AVX-512 code: on AVX-512 CPUs the same frames encoded to different bytes run to run.

Measured with the libx264 in PyAV's wheels (core 165) on an AMD EPYC with AVX-512: twelve identical
frames encoded eight times in one process gave eight different bitstreams, decoded pixels up to 40
levels apart, whenever other allocations had come and gone in between. The variation goes with
``mbtree=0`` and with AVX-512 left out; it stays with one thread. So x264's AVX-512 macroblock-tree
code reads memory nothing wrote, and a segment encoded again after a fault no longer matched the one
an uninterrupted run made (the soak's frame check). x264 takes its CPU capabilities by name in its
``asm`` parameter; this module asks the library which ones it detected and hands them back without
AVX-512. AVX2 does the same work at about the same speed. Where x264 detects no AVX-512, or says
nothing we can read, x264 keeps its own choice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from fractions import Fraction

import av
import av.logging

log = logging.getLogger(__name__)

_CAPABILITIES = "using cpu capabilities:"
_LEFT_OUT = "AVX512"
_PROBING = threading.Lock()


def capabilities_without_avx512(message: str) -> str | None:
    """x264's ``asm`` value from its "using cpu capabilities: ..." line, AVX-512 left out; None when
    the line is not that one or names no AVX-512 (nothing to change)."""
    if not message.startswith(_CAPABILITIES):
        return None
    names = message[len(_CAPABILITIES):].split()
    if _LEFT_OUT not in names:
        return None
    kept = [name for name in names if name != _LEFT_OUT]
    return ",".join(kept) if kept else None


@functools.cache
def x264_asm_setting() -> str | None:
    """The ``asm`` value every libx264 encoder here gets, or None to leave x264's own choice.

    Opens a 16x16 encoder once per process with FFmpeg's log captured at INFO on this thread: x264
    says there what it detected (about a millisecond)."""
    try:
        messages = _x264_messages()
    except Exception as exc:  # noqa: BLE001 - a best-effort probe: no libx264, or a PyAV (a far side's) that
        # logs differently; x264 then keeps its own choice, as it did before this module
        log.debug("x264 capabilities not read: %s", exc)
        return None
    for message in messages:
        setting = capabilities_without_avx512(message)
        if setting is not None:
            log.debug("x264: AVX-512 left out for repeatable encodes (asm=%s)", setting)
            return setting
    return None


def x264_options(options: Mapping[str, str]) -> dict[str, object]:
    """``options`` for a libx264 stream (the type PyAV's ``stream.options`` takes), with the ``asm``
    setting added where it applies."""
    setting = x264_asm_setting()
    added = {} if setting is None else {"x264-params": f"asm={setting}"}
    return {**options, **added}


def _x264_messages() -> list[str]:
    """What libx264 logs when a 16x16 encoder opens, FFmpeg's log level put back after (under a lock:
    two first encoders at once must not leave the level raised)."""
    with _PROBING:
        previous = av.logging.get_level()
        av.logging.set_level(av.logging.INFO)
        try:
            with av.logging.Capture() as captured:
                context = av.CodecContext.create("libx264", "w")
                context.width, context.height, context.pix_fmt = 16, 16, "yuv420p"
                context.time_base = Fraction(1, 25)
                context.open()
                del context
        finally:
            av.logging.set_level(previous)
    return [message.strip() for _level, name, message in captured if name == "libx264"]
