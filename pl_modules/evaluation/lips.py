"""`playmate shards lips DIR`: which motion keypoints are the lips, measured on a prepared dataset.

The mouth-opening signal (`mouth_audio_r`, in validation and in every evaluation report) is the
vertical gap between two of the 21 implicit keypoints, `eval.lip_keypoints` = [upper, lower]. The
default is the synthetic world's pair; LivePortrait's keypoints are unsupervised, so on real motion
the pair has to be found from data: every ordered pair is scored by how well its gap follows the
audio envelope (`metrics.motion.lip_keypoint_scores`), and the best one is suggested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from configs.evaluation import EvaluationConfig
from datamodules.clips import load_clips
from metrics.motion import LipScores, lip_keypoint_scores


@dataclass
class LipCheck:
    """The scores over the clips of `data` and the pair currently configured."""

    scores: LipScores
    configured: tuple[int, int]
    skipped: int  # samples or shards of the data left out while loading

    @property
    def suggested(self) -> tuple[int, int]:
        return self.scores.suggest()

    def rank_of(self, pair: tuple[int, int]) -> int:
        """1-based rank of (upper, lower) among all ordered pairs."""
        r = self.scores.pair_r[pair]
        return int((self.scores.pair_r > r).sum()) + 1

    def lines(self, top: int = 5) -> list[str]:
        """The printed report: best pairs, keypoints that move most with the audio, the suggestion."""
        s = self.scores
        out = [f"{s.num_clips} clips, {s.num_frames} frames ({self.skipped} skipped while loading)",
               "best pairs: mouth opening = y[lower] − y[upper] vs audio envelope (Pearson r, mean over clips)"]
        out += [f"  {i + 1}. upper {u:2d}, lower {lo:2d}: r = {r:+.3f}"
                for i, (u, lo, r) in enumerate(s.top_pairs(top))]
        order = sorted(range(len(s.kp_r)), key=lambda k: -abs(s.kp_r[k]))[:top]
        out.append("keypoints whose vertical offset follows the audio most (> 0 down, < 0 up with loud audio):")
        out.append("  " + ", ".join(f"{k}: {s.kp_r[k]:+.3f}" for k in order))
        u, lo = self.suggested
        cu, cl = self.configured
        out.append(f"configured lip_keypoints [{cu}, {cl}]: r = {s.pair_r[cu, cl]:+.3f}, "
                   f"rank {self.rank_of(self.configured)} of {s.pair_r.size - len(s.kp_r)}")
        out.append(f"suggested: lip_keypoints [{u}, {lo}]  (training YAML: eval.lip_keypoints=[{u},{lo}]; "
                   f"playmate evaluate --lip-keypoints {u} {lo})")
        return out


def check_lip_keypoints_on_data(data: Sequence[str], max_clips: int = 0, min_frames: int = 25,
                                configured: Sequence[int] | None = None) -> LipCheck:
    """Score every keypoint pair on the first max_clips clips (0 = all) of dataset dirs/globs `data`."""
    lips = EvaluationConfig(lip_keypoints=list(configured)).lips if configured else EvaluationConfig().lips
    clips = load_clips([str(d) for d in data], max_clips, 0, config_key="DIR")
    scores = lip_keypoint_scores(((c.motion, c.kp, c.wav) for c in clips), min_frames=min_frames)
    return LipCheck(scores, lips, len(clips.skipped))
