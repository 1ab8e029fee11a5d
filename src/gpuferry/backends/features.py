"""What a backend can do, declared once per kind: how bytes move, how commands travel, where the far side is."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class ChunkShape:
    """The chunk size and how many chunks move at once, for one direction of one backend."""

    chunk_size: int
    parallel: int = 1
    #: chunks read and hashed ahead of the ones moving (uploads): with one chunk at a time, reading and
    #: hashing the next one would otherwise leave the link idle between chunks; each costs a chunk of memory
    #: (of disk where the backend uploads from files: see ``BackendFeatures.uploads_from_files``)
    read_ahead: int = 0


@dataclass(frozen=True)
class BackendFeatures:
    """A backend's declared abilities. Transfers, jobs, doctor and the CLI ask these, never the kind's name."""

    #: chunk size and parallel chunks for uploads and downloads
    upload: ChunkShape = ChunkShape(8 * MIB)
    download: ChunkShape = ChunkShape(8 * MIB)
    #: stage writes land as ordered, size-checked pieces: a cut leaves a prefix of the chunk that the next
    #: try continues from (an sftp write is pipelined out of order, so a cut can leave holes: not piecewise)
    piecewise_upload: bool = False
    #: far-side commits run on a thread beside the next chunk's move (else from the uploading thread)
    background_commits: bool = False
    #: calls cost (a process, a login, a Python start): chunks are committed this many bytes per call,
    #: the last batch by the call that finishes the upload; None commits each chunk as it lands
    commit_batch_bytes: int | None = None
    #: a file of one chunk goes straight to its partial file and is checked, renamed and tidied by ONE far
    #: call, with no survey first: two calls instead of three, where a call costs more than re-sending one
    #: chunk after a drop (or sending a file the far side already holds)
    whole_uploads: bool = False
    #: the backend sends a local file as it is (``write_file``; cgpu copy takes a path): an upload copies each
    #: chunk into a spool file of its own, hashing it on the way, while the chunk before it moves, so the
    #: link never waits on reading, hashing or writing a chunk, and no chunk is held in memory
    uploads_from_files: bool = False
    #: reads travel as text through a terminal or a line relay: read through the transfer agent's base64
    #: lines (the backend's own read_bytes prints one long line, which such relays handle slowly)
    line_based_reads: bool = False
    #: a file under one chunk comes whole through the transfer agent in ONE call (size and sha256 with it)
    whole_small_downloads: bool = False
    #: commands are typed as lines into a terminal (each line must fit its input buffer)
    typed_lines: bool = False
    #: ``run_streaming`` hands over output lines as they arrive (else only once the command ended)
    streams_output: bool = False
    #: ``exchange_with_program`` keeps a far-side program running between requests (one request line, one
    #: reply line), where starting one per step costs (ssh: a channel, a login shell and a Python, 0.3 s)
    program_sessions: bool = False
    #: the far side is this machine (its python is this interpreter, its work folder is in our data folder)
    far_is_here: bool = False
    #: the python the far side runs when the target's settings name none (None: this interpreter)
    default_python: str | None = "python3"
    #: switched on by a setting of its own (CGPU_GPU_ENABLED) and tried at its own step of the fallback
    #: order, before the configured targets; it is then usable without a ``[targets.NAME]`` table
    own_fallback_step: bool = False
    #: segments run as tasks of a cluster's own scheduler (Ray): no shell, no far-side folder; jobs run
    #: through jobs/cluster_runner.py and the entry's ``cluster`` connects
    cluster: bool = False


@dataclass(frozen=True)
class PreflightCheck:
    """One check a backend runs on this machine before connecting (a CLI installed, its login present)."""

    name: str
    status: str  # pass, warn, fail
    detail: str
    fix: str = ""
