"""FID (injected net, no torch-fidelity), CSIM (IResNet keys), emotion accuracy, PSNR/SSIM, LPIPS offline."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from metrics.csim import CSIM, IResNet
from metrics.emotion import EmotionAccuracy, load_classifier
from metrics.fid import FID
from metrics.frechet import feature_stats, frechet_distance
from metrics.image import build_lpips, build_psnr, build_ssim
from models.weights import WeightsError


class _TinyFeat(nn.Module):
    """Deterministic FID feature stand-in: per-channel mean and std (6-d)."""

    num_features = 6
    resize_mode = "none (tiny test net)"

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) uint8 → (N, 6)
        x = x.float() * self.w
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def test_fid_injected_net_matches_reference_and_stays_out_of_state_dict(gen: torch.Generator) -> None:
    real = torch.randint(0, 256, (20, 3, 8, 8), generator=gen, dtype=torch.uint8)
    fake = (real.float() * 0.7).to(torch.uint8)
    m = FID(_TinyFeat())
    m.update(real, real=True)
    m.update(fake, real=False)
    net = _TinyFeat()
    (mr, cr), (mf, cf) = feature_stats(net(real).double()), feature_stats(net(fake).double())
    assert float(m.compute()) == pytest.approx(frechet_distance(mr, cr, mf, cf), rel=1e-9)
    assert m.state_dict() == {} and list(m.parameters()) == []
    p = m.protocol()
    assert p["n_real"] == 20 and p["resize"] == "none (tiny test net)"


def test_fid_2048_fails_clearly_without_file_or_torch_fidelity(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"metrics\.fid\.weights_path"):
        FID(2048, weights_path=tmp_path / "missing.pth")
    f = tmp_path / "inception.pth"
    torch.save({}, f)
    try:
        import torch_fidelity  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ModuleNotFoundError, match="torch-fidelity"):
            FID(2048, weights_path=f)


@pytest.fixture(scope="module")
def iresnet() -> IResNet:
    torch.manual_seed(0)
    return IResNet("r18").eval()


def test_iresnet_keys_strict_load_and_module_prefix(iresnet: IResNet, save_sd) -> None:
    sd = iresnet.state_dict()
    for k in ("conv1.weight", "prelu.weight", "layer1.0.downsample.0.weight", "layer2.1.prelu.weight",
              "bn2.running_var", "features.weight"):
        assert k in sd
    assert tuple(sd["fc.weight"].shape) == (512, 25088)
    wrapped = save_sd(iresnet, "wrapped.pt", edit=lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}})
    net = IResNet.from_file(wrapped, arch="r18")
    torch.testing.assert_close(net.state_dict()["fc.bias"], sd["fc.bias"])
    bad = save_sd(iresnet, "bad.pt",
                  edit=lambda s: {k.replace("layer3.0.bn3", "layer3.0.bnX"): v for k, v in s.items()})
    with pytest.raises(WeightsError, match=r"layer3\.0\.bn3"):
        IResNet.from_file(bad, arch="r18")
    with pytest.raises(FileNotFoundError, match=r"metrics\.csim\.weights_path"):
        IResNet.from_file(None)


def test_csim_identical_faces_is_one(iresnet: IResNet, gen: torch.Generator) -> None:
    faces = torch.randint(0, 256, (2, 3, 112, 112), generator=gen, dtype=torch.uint8)
    m = CSIM(iresnet)
    m.update(faces, faces)
    assert float(m.compute()) == pytest.approx(1.0, abs=1e-5)
    assert m.state_dict() == {} and m.protocol()["num_pairs"] == 2


class _FixedLogits(nn.Module):
    def __init__(self, n: int = 8) -> None:
        super().__init__()
        self.head = nn.Linear(1, n)

    def forward(self, x: Tensor) -> Tensor:  # (T, 1) → (T, n)
        return self.head(x)


def test_emotion_accuracy_and_loader(save_sd) -> None:
    labels = ["neutral", "angry", "disgusted", "contempt", "fear", "happy", "sad", "surprised"]
    clf = _FixedLogits()
    with torch.no_grad():
        clf.head.weight.zero_()
        clf.head.bias.copy_(torch.arange(8.0))  # always predicts "surprised"
    clf = load_classifier(_FixedLogits(), save_sd(clf))
    m = EmotionAccuracy(clf, labels, aggregation="majority_vote")
    m.update(torch.zeros(5, 1), "surprised")
    m.update(torch.zeros(5, 1), "happy")
    assert float(m.compute()) == 0.5
    with pytest.raises(ValueError, match="aggregation"):
        EmotionAccuracy(clf, labels, aggregation="vote")


def test_psnr_ssim_known_values(gen: torch.Generator) -> None:
    x = torch.rand(2, 3, 32, 32, generator=gen)
    y = (x + 0.1).clamp(0, 1)
    psnr = build_psnr(1.0)
    noisy = x.clone()
    noisy[0] += 0.1  # MSE 0.01 → 20 dB for image 0
    psnr.update(noisy.clamp(max=10), x)
    vals = [10 * math.log10(1 / ((noisy[i] - x[i]) ** 2).mean().item()) if i == 0 else float("inf") for i in range(2)]
    assert math.isinf(float(psnr.compute())) and vals[0] == pytest.approx(20.0, abs=1e-4)
    ssim = build_ssim(1.0)
    ssim.update(x, x)
    assert float(ssim.compute()) == pytest.approx(1.0, abs=1e-6)
    ssim2 = build_ssim(1.0)
    ssim2.update(y, x)
    assert float(ssim2.compute()) < 1.0


def test_lpips_needs_local_backbone(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"metrics\.lpips\.backbone_weights_path"):
        build_lpips(tmp_path / "alexnet.pth")
