"""Why an item or clip is not kept: the rejection reasons (ledger and summary keys) and the two errors.

A step that finds bad input raises `Rejected(reason, detail)`; the pipeline records the reason in
the ledger and moves on. Nothing is ever padded: every length mismatch is a rejection or an
`AlignmentError`.
"""

from __future__ import annotations

# Rejection reasons (ledger and summary keys).
CORRUPT = "corrupt_video"
NO_AUDIO = "no_audio"
CORRUPT_AUDIO = "corrupt_audio"
VFR = "variable_frame_rate"
AUDIO_SHORT = "audio_shorter_than_video"
TOO_SHORT = "too_short"
FACE_SMALL = "face_too_small"
NO_ANNOTATION = "no_face_annotation"
GAPS = "detection_gaps"
NO_TRACK = "no_face_track"  # S3FD tracking: no face detected in a piece of the video
SHORT_TRACK = "face_track_too_short"  # S3FD tracking: no track spans clips.min_s
YAW = "yaw_too_large"
SYNC_CONF = "sync_low_confidence"
SYNC_OFFSET = "sync_offset_too_large"


class Rejected(Exception):
    """Bad input for one item or clip: recorded with its reason, never crashes the run."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class AlignmentError(RuntimeError):
    """Frames, motion and audio of a clip disagree in length (a bug upstream: the clip is never written)."""
