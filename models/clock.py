"""The audio/video clock every part of the project shares: 16 kHz mono audio, 25 fps motion and video.

One video frame spans exactly 640 audio samples. Shards store audio pre-aligned to this clock
(T frames ⇔ T·640 samples, docs/data-format.md), audio encoders emit one feature row per frame,
and generation turns a duration into round(duration·25) frames.
"""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz, mono
FPS = 25  # motion and video frames per second
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640

