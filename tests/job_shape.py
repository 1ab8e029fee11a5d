"""The clip the remote-job tests and benchmark share: 3 segments of 24 frames at 24 fps."""

FPS = 24
FRAMES = 72
SEGMENT_SECONDS = 1.0
SEGMENT_FRAMES = 24
WIDTH, HEIGHT = 96, 64
#: the stall limit of tests that hang a worker on purpose and wait the limit out: well past a worker's
#: start (its heartbeat ticks from then on) on a loaded machine, and half the fixture's general 15 s
STALL_TEST_TIMEOUT = 8.0
