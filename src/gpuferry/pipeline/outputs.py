"""Where an output goes and how it lands: default names, a partial file, an atomic, no-clobber rename."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from gpuferry.errors import OutputExistsError, OutputNotWritableError, UsageError
from gpuferry.media.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

PARTIAL_MARK = ".gpuferry-partial-"


def default_output(source: Path, scale: int) -> Path:
    """``<stem>_x<scale><ext>`` next to the input; containers we cannot write become .mkv."""
    suffix = source.suffix
    if suffix.lower() not in VIDEO_EXTENSIONS and suffix.lower() not in IMAGE_EXTENSIONS:
        suffix = ".mkv"
    return source.with_name(f"{source.stem}_x{scale}{suffix}")


def check_output(source: Path, output: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that would clobber the input or an existing file, or that
    cannot be written."""
    if output.exists() and source.exists() and os.path.samefile(source, output):
        raise UsageError("the output would replace the input; choose another -o", path=str(output))
    if output.exists() and not overwrite:
        raise OutputExistsError("output already exists", path=str(output), step="output")
    if output.is_dir():
        raise OutputNotWritableError("output path is a directory", path=str(output), step="output")
    directory = output.parent
    if not directory.is_dir():
        raise OutputNotWritableError("output directory does not exist", path=str(directory), step="output")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputNotWritableError("output directory is not writable", path=str(directory), step="output")


def partial_path(output: Path) -> Path:
    """A hidden sibling of the output that keeps its extension (so the container is chosen right)."""
    return output.with_name(f".{output.stem}{PARTIAL_MARK}{secrets.token_hex(4)}{output.suffix}")


@contextlib.contextmanager
def partial_output(output: Path) -> Iterator[Path]:
    """Yield a partial path; it is deleted unless the body published it (on error, Ctrl-C, kill)."""
    partial = partial_path(output)
    try:
        yield partial
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def publish(partial: Path, output: Path, overwrite: bool) -> None:
    """Move a finished, checked partial file into place atomically; never clobber without leave."""
    if overwrite:
        os.replace(partial, output)
        return
    try:
        # link() fails if the name exists, so a file that appeared meanwhile is never replaced
        os.link(partial, output)
    except FileExistsError:
        raise OutputExistsError("output appeared while we worked", path=str(output), step="publish") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if output.exists():
            raise OutputExistsError("output already exists", path=str(output), step="publish") from None
        os.replace(partial, output)
        return
    partial.unlink()
