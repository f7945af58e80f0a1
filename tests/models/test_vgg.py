"""VGG19 (models/vgg.py): torchvision's key/shape manifest, strict loading of files in that format (with and
without the ImageNet classifier), the input normalisation, the taps, the pyramid and the perceptual distance."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from models.vgg import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TAPS,
    VGG19,
    load_vgg19,
    perceptual_distance,
    pyramid_downsample,
    vgg19_state_dict,
)
from models.weights import WeightsError

MANIFEST = json.loads((Path(__file__).parent / "data" / "vgg19_state_dict.json").read_text())
TORCHVISION = OrderedDict((k, tuple(s)) for k, s in MANIFEST["keys"])


def test_manifest_is_torchvisions_vgg19_and_our_features_match_it() -> None:
    assert sum(math.prod(s) for s in TORCHVISION.values()) == MANIFEST["num_parameters"] == 143_667_240
    ours = OrderedDict((k, tuple(v.shape)) for k, v in VGG19().state_dict().items())
    features = OrderedDict((k, s) for k, s in TORCHVISION.items() if k.startswith("features."))
    assert ours == features  # same names, order and shapes; no normalisation buffers in the state dict


def test_generated_weights_have_exactly_torchvisions_keys_and_shapes(tmp_path: Path) -> None:
    sd = vgg19_state_dict(seed=1)
    assert OrderedDict((k, tuple(v.shape)) for k, v in sd.items()) == TORCHVISION
    torch.save(sd, tmp_path / "vgg19.pth")
    assert (tmp_path / "vgg19.pth").stat().st_size < 100e6  # the 123 M classifier entries are stride-0 zeros


@pytest.fixture(scope="module")
def full_file(tmp_path_factory) -> tuple[Path, OrderedDict]:
    sd = vgg19_state_dict(seed=3)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save(sd, path)
    return path, sd


def test_loads_a_file_with_the_classifier_and_says_which_keys_it_ignores(full_file, caplog) -> None:
    path, sd = full_file
    with caplog.at_level("INFO", logger="models.vgg"):
        net = load_vgg19(path, "stage0.vgg_weights")
    classifier = [k for k in TORCHVISION if k.startswith("classifier.")]
    assert net.ignored_keys == classifier and len(classifier) == 6
    assert "ignored the 6 classifier keys" in caplog.text and "classifier.6.bias" in caplog.text
    own = net.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in own)
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_loads_a_file_without_the_classifier(full_file, tmp_path: Path) -> None:
    _, sd = full_file
    features = OrderedDict((k, v) for k, v in sd.items() if k.startswith("features."))
    torch.save(features, tmp_path / "features.pth")
    net = load_vgg19(tmp_path / "features.pth", "stage0.vgg_weights")
    assert net.ignored_keys == [] and torch.equal(net.features[34].weight, sd["features.34.weight"])


@pytest.mark.parametrize("edit, expect", [
    (lambda sd: sd.pop("features.28.weight"), "1 missing key(s), first ['features.28.weight']"),
    (lambda sd: sd.update({"features.1.running_mean": torch.zeros(64)}), "unexpected key(s), first "
                                                                        "['features.1.running_mean']"),
    (lambda sd: sd.update({"features.0.weight": torch.zeros(64, 3, 5, 5)}), "shape mismatch"),
])
def test_a_wrong_file_fails_naming_the_key_and_the_file(tmp_path: Path, edit, expect) -> None:
    sd = vgg19_state_dict(width=0.125, classifier=False)
    edit(sd)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as e:
        load_vgg19(tmp_path / "bad.pth", "stage0.vgg_weights", width=0.125)
    msg = str(e.value)
    assert expect in msg and "stage0.vgg_weights" in msg and "bad.pth" in msg and "\n" not in msg


def test_a_missing_file_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="stage0.vgg_weights: file .*nope.pth.* not found"):
        load_vgg19(tmp_path / "nope.pth", "stage0.vgg_weights")


def test_imagenet_normalisation_and_tap_shapes() -> None:
    torch.manual_seed(0)
    net = VGG19().eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    relu1_1 = net(mean)[0]  # the mean image normalises to zeros: the first conv gives its bias at every pixel
    bias = net.features[0].bias.detach().clamp(min=0).view(1, 64, 1, 1).expand_as(relu1_1)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # (zero padding makes the border differ)
    assert torch.equal(relu1_1[inner], bias[inner])
    x = torch.rand(2, 3, 64, 64)
    shapes = [tuple(f.shape) for f in net(x)]
    assert shapes == [(2, 64, 64, 64), (2, 128, 32, 32), (2, 256, 16, 16), (2, 512, 8, 8), (2, 512, 4, 4)]
    manual = net.features[0]((x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD)
                             .view(1, 3, 1, 1)).relu()
    torch.testing.assert_close(net(x)[0], manual, rtol=0, atol=1e-6)
    assert len(VGG19(taps=("relu2_1",))(x)) == 1 and TAPS["relu5_1"] == 29


def test_pyramid_downsampling() -> None:
    x = torch.full((1, 3, 32, 32), 0.7)
    half = pyramid_downsample(x, 0.5)
    assert half.shape == (1, 3, 16, 16) and pyramid_downsample(x, 1.0) is x
    torch.testing.assert_close(half[..., 2:-2, 2:-2], torch.full((1, 3, 12, 12), 0.7))  # weights sum to 1
    assert pyramid_downsample(torch.rand(1, 3, 32, 32), 0.125).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="1/n"):
        pyramid_downsample(x, 0.3)


def test_perceptual_distance_is_zero_for_equal_images_and_differentiable() -> None:
    torch.manual_seed(0)
    net = VGG19(width=0.125).eval().requires_grad_(False)
    a = torch.rand(2, 3, 64, 64, requires_grad=True)
    for norm in ("l1", "l2"):
        d = perceptual_distance(net, a, a.detach().clone(), (1.0, 0.5), (10,) * 5, norm)
        assert d.shape == (2,) and d.abs().max() < 1e-3  # (the l2 form has a 1e-6 floor per tap)
        d = perceptual_distance(net, a, torch.rand(2, 3, 64, 64), (1.0, 0.5), (10,) * 5, norm)
        assert (d > 0.1).all()
        d.sum().backward()
        assert a.grad is not None and a.grad.abs().sum() > 0
        a.grad = None
