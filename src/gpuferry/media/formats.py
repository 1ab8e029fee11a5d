"""Which file extensions are images and which are video containers, and what codec each gets."""

from __future__ import annotations

from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp"})

#: output extension -> (default video codec, default pixel format)
VIDEO_EXTENSIONS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
}


def is_image_path(path: str | Path) -> bool:
    """True when the path's extension names a still-image format we handle."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def default_codec_for(path: str | Path) -> tuple[str, str]:
    """The default (codec, pix_fmt) for an output path; unknown extensions get mp4's."""
    return VIDEO_EXTENSIONS.get(Path(path).suffix.lower(), VIDEO_EXTENSIONS[".mp4"])
