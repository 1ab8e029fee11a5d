"""The clip the remote-job tests and benchmark share: 3 segments of 24 frames at 24 fps."""

FPS = 24
FRAMES = 72
SEGMENT_SECONDS = 1.0
SEGMENT_FRAMES = 24
WIDTH, HEIGHT = 96, 64
