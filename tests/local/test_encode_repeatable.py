"""The same frames always encode to the same bytes: a segment encoded again after a fault is the one an
uninterrupted run makes (x264's AVX-512 code broke that on CPUs that have it)."""

from __future__ import annotations

import hashlib
import random

import av.logging
import numpy as np

from gpuferry.media import probe
from gpuferry.media.decode import iter_video_frames
from gpuferry.media.encode import EncodeOptions, VideoWriter
from gpuferry.media.synth import make_clip
from gpuferry.media.x264_cpu import capabilities_without_avx512, x264_asm_setting


class Churn:
    """Memory that comes and goes between encodes, as a worker's earlier segments leave it."""

    def __init__(self) -> None:
        self.rng = random.Random(5)
        self.held: list[bytes] = []

    def step(self) -> None:
        self.held.append(np.random.default_rng(len(self.held)).bytes(self.rng.randint(1, 3 << 20)))
        del self.held[:-3]


def test_the_same_frames_encode_to_the_same_bytes_whatever_the_process_did_before(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=24, fps=12, width=320, height=180, audio=False)
    info = probe(clip)
    frames = [source.rgb for source in iter_video_frames(clip, 0)]
    churn = Churn()
    digests = set()
    for attempt in range(6):
        churn.step()
        output = tmp_path / f"attempt-{attempt}.mp4"
        writer = VideoWriter(output, info, 320, 180, EncodeOptions(), copy_streams=False, frame_clock=True)
        for index, rgb in enumerate(frames):
            writer.write(rgb, None, index)
        writer.close()
        digests.add(hashlib.sha256(output.read_bytes()).hexdigest())
    assert len(digests) == 1, f"6 encodes of the same 24 frames gave {len(digests)} different files"


def test_a_clip_made_again_is_the_same_file(tmp_path):
    churn = Churn()
    digests = set()
    for attempt in range(6):
        churn.step()
        clip = tmp_path / f"clip-{attempt}.mp4"
        make_clip(clip, frames=24, fps=12, width=320, height=180)
        digests.add(hashlib.sha256(clip.read_bytes()).hexdigest())
    assert len(digests) == 1, f"the same clip made 6 times gave {len(digests)} different files"


def test_avx512_is_left_out_of_what_x264_detected_and_nothing_else_is_touched():
    line = "using cpu capabilities: MMX2 SSE2Fast SSSE3 SSE4.2 AVX FMA3 BMI2 AVX2 AVX512"
    assert capabilities_without_avx512(line) == "MMX2,SSE2Fast,SSSE3,SSE4.2,AVX,FMA3,BMI2,AVX2"
    assert capabilities_without_avx512("using cpu capabilities: MMX2 SSE2Fast SSSE3 SSE4.2 AVX AVX2") is None
    assert capabilities_without_avx512("using cpu capabilities: none!") is None
    assert capabilities_without_avx512("profile High, level 1.0, 4:2:0, 8-bit") is None


def test_asking_x264_leaves_ffmpegs_log_level_as_it_was():
    x264_asm_setting.cache_clear()
    before = av.logging.get_level()
    x264_asm_setting()
    assert av.logging.get_level() == before
