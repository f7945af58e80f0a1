"""FVD: I3D key layout and strict loading, clip logic, streaming Fréchet through a feature net."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from metrics.fvd import FVD, FVDConfig, InceptionI3d, sample_clips
from models.weights import WeightsError


@pytest.fixture(scope="module")
def i3d() -> InceptionI3d:
    torch.manual_seed(0)
    return InceptionI3d().eval()


def test_i3d_keys_and_strict_load(i3d: InceptionI3d, save_sd) -> None:
    sd = i3d.state_dict()
    assert "Mixed_3b.b1b.conv3d.weight" in sd and "Mixed_5c.b3b.bn.running_var" in sd
    assert tuple(sd["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1) and "logits.conv3d.bias" in sd
    net = InceptionI3d.from_file(save_sd(i3d))
    torch.testing.assert_close(net.state_dict()["Mixed_4f.b2b.conv3d.weight"], sd["Mixed_4f.b2b.conv3d.weight"])
    bad = save_sd(i3d, "bad.pt", edit=lambda s: {k: v for k, v in s.items() if not k.startswith("Mixed_4c.b0.")})
    with pytest.raises(WeightsError, match=r"Mixed_4c\.b0\.conv3d\.weight"):
        InceptionI3d.from_file(bad)
    with pytest.raises(FileNotFoundError, match=r"metrics\.fvd\.weights_path"):
        FVD.from_config(FVDConfig(weights_path="/nonexistent/i3d.pt"))


def test_i3d_forward_needs_nine_frames(i3d: InceptionI3d) -> None:
    with torch.inference_mode():
        assert i3d(torch.zeros(1, 3, 9, 224, 224)).shape == (1, 400)
        with pytest.raises(ValueError, match="9 frames"):
            i3d(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="clip_len"):
        FVDConfig(clip_len=8)


def test_clip_sampling() -> None:
    v = torch.arange(2 * 40).reshape(2, 40, 1, 1, 1).expand(2, 40, 3, 2, 2)
    assert torch.equal(sample_clips(v, 16, "first")[:, :, 0, 0, 0], v[:, :16, 0, 0, 0])
    a = sample_clips(v, 16, "random", torch.Generator().manual_seed(1))
    b = sample_clips(v, 16, "random", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, sample_clips(v, 16, "first"))
    assert sample_clips(v, 16, "all_non_overlapping").shape[0] == 4
    with pytest.raises(ValueError, match="frames"):
        sample_clips(v[:, :10], 16, "first")


class _MeanColour(nn.Module):
    """Stand-in I3D: per-clip mean RGB (3-d features)."""

    num_features = 3

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, L, 224, 224) → (N, 3)
        return x.mean(dim=(2, 3, 4))


def test_fvd_metric_with_injected_net_and_no_weights_in_checkpoint() -> None:
    g = torch.Generator().manual_seed(0)
    m = FVD(_MeanColour(), FVDConfig(clip_len=9, resize="short_side_center_crop"))
    vids = torch.randint(0, 256, (6, 10, 3, 32, 40), generator=g, dtype=torch.uint8)
    m.update(vids, real=True)
    m.update(vids, real=False)
    assert abs(float(m.compute())) < 1e-9
    p = m.protocol()
    assert p["n_real"] == 6 and p["resize"] == "short_side_center_crop" and "RANDOM" in p["weights"]["note"]
    assert m.state_dict() == {}
    big = FVD(InceptionI3d(), FVDConfig())
    assert big.state_dict() == {} and not any(True for _ in big.parameters())
