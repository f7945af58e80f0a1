"""Sync-C/Sync-D metric: per-video averaging, skipped short clips, no weights in state, gloo sync."""

from __future__ import annotations

import torch

from metrics.sync import SyncMetric
from models.syncnet import SyncNet
from tests.models.sync_stub import BrightnessEnergyNet, make_clip


def test_sync_metric_video_average_and_no_weights_in_state_dict() -> None:
    torch.manual_seed(0)
    syncnet = SyncNet().eval()
    m = SyncMetric(BrightnessEnergyNet())  # type: ignore[arg-type]
    frames, audio, _ = make_clip(40)
    m.update(frames, torch.from_numpy(audio))
    m.update(frames[:3], torch.from_numpy(audio))  # too short: counted, not scored
    m.add_scores(3, 7.0, 6.5)
    out = m.compute()
    assert int(out["num_videos"]) == 2 and int(out["skipped"]) == 1
    assert m.protocol()["num_videos"] == 2
    assert SyncMetric(syncnet).state_dict() == {}


def _gloo_sync(rank: int, world: int) -> dict:
    m = SyncMetric(None)
    for i in range(rank, 5 if rank == 0 else 3):  # uneven: rank 0 gets 5, rank 1 gets 2
        m.add_scores(i, float(i) + 1, 10.0 - i)
    return {k: v for k, v in m.compute().items()}


def test_gloo_list_states_sync(run_gloo) -> None:
    ref = SyncMetric(None)
    for i in list(range(0, 5)) + list(range(1, 3)):
        ref.add_scores(i, float(i) + 1, 10.0 - i)
    want = ref.compute()
    for r in run_gloo(_gloo_sync):
        for key in ("sync_c", "sync_d", "offset_abs", "num_videos"):
            torch.testing.assert_close(r[key].double(), want[key].double())
