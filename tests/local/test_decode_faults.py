"""A decoder that stops is reported for what stopped it: the file, or the system it ran on."""

from __future__ import annotations

import errno

import av
import pytest

from gpuferry.errors import BadInputError, GpuferryError
from gpuferry.media import decode


class StopsDecoding:
    """A real container whose decoder fails after ``frames`` frames with ``error``."""

    def __init__(self, container, frames: int, error: Exception) -> None:
        self._container, self._frames, self._error = container, frames, error

    def __enter__(self):
        self._container.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._container.__exit__(*exc_info)

    def __getattr__(self, name):
        return getattr(self._container, name)

    def decode(self, *args, **kwargs):
        for count, frame in enumerate(self._container.decode(*args, **kwargs)):
            if count == self._frames:
                raise self._error
            yield frame


@pytest.mark.parametrize("error, blamed", [
    (av.error.BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), "system"),
    (av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory"), "system"),
    (av.error.InvalidDataError(errno.EINVAL, "Invalid data found when processing input"), "file"),
])
def test_a_refused_thread_or_memory_is_not_called_a_broken_file(clips, monkeypatch, error, blamed):
    """The OS refusing the decoder a thread or memory (a starved remote worker) is no reason to call the
    input corrupt, which ends a job for good: it is reported as a fault of the moment, which a remote job
    recovers from with a fresh worker. Bad data still is the file's fault."""
    source = clips.get("plain.mp4")
    real_open = av.open
    monkeypatch.setattr(decode.av, "open", lambda *a, **k: StopsDecoding(real_open(*a, **k), 5, error))
    with pytest.raises(GpuferryError) as caught:
        list(decode.iter_video_frames(source, 0))
    if blamed == "system":
        assert not isinstance(caught.value, BadInputError)
        assert caught.value.kind == "error" and "refused resources" in caught.value.cause
    else:
        assert isinstance(caught.value, BadInputError) and "corrupt or truncated at frame 5" in caught.value.cause
