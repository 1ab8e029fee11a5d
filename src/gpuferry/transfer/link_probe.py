"""A link's throughput both ways, measured on a small random file through the verified transfer path."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from gpuferry.backends.base import Backend

from .download import download
from .options import TransferOptions
from .upload import upload


def measure_throughput(backend: Backend, probe_bytes: int, name: str | None = None) -> tuple[float, float]:
    """Bytes per second (upload, download) of a ``probe_bytes`` file; the remote copy is removed. The
    default name is plain and unique: a default jupyter_server (a Colab runtime) refuses hidden names."""
    remote = backend.resolve(name or f"gpuferry-link-probe-{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "probe.bin"
        local.write_bytes(os.urandom(probe_bytes))
        options = TransferOptions(skip_identical=False)
        try:
            up = upload(backend, local, remote, options=options)
            down = download(backend, remote, Path(scratch) / "back.bin", options=options)
        finally:
            backend.remove(remote)
    return tuple(r.bytes_total / r.seconds if r.seconds else 0.0 for r in (up, down))  # type: ignore[return-value]
