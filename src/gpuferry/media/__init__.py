"""Media on PyAV: probe, decode to RGB frames, encode, copy audio and subtitles, images."""

from gpuferry.media.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image_path
from gpuferry.media.probe import MediaInfo, VideoInfo, probe

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "MediaInfo", "VideoInfo", "is_image_path", "probe"]
