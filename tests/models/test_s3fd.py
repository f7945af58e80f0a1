"""S3FD (models.s3fd): the public sfd_face.pth layout and strict loading, the reference's post-processing
re-implemented here straightforwardly and compared on random network outputs, and output invariants."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.cv_resize import resize_linear
from models.s3fd import S3FD, S3FDNet
from models.weights import WeightsError

# Every key, shape and dtype of the public sfd_face.pth (joonson/syncnet_python detectors/s3fd).
MANIFEST = json.loads((Path(__file__).parent / "data" / "s3fd_state_dict.json").read_text())


@pytest.fixture(scope="module")
def net() -> S3FDNet:
    torch.manual_seed(0)
    return S3FDNet().eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# (a) the public layout, strict loading
# ------------------------------------------------------------------------------------------------


def test_state_dict_equals_the_public_manifest(net: S3FDNet) -> None:
    ref = [(e["key"], tuple(e["shape"]), e["dtype"]) for e in MANIFEST["state_dict"]]
    own = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()]
    assert own == ref  # same keys, same order, same shapes and dtypes
    assert len(own) == MANIFEST["counts"]["state_dict_tensors"]
    assert sum(p.numel() for p in net.parameters()) == MANIFEST["counts"]["parameters"]
    assert [t.numel() for t in net.buffers()] == []
    # L2Norm scales start at the reference's 10, 8, 5
    assert [float(getattr(net, f"L2Norm{n}").weight[0].detach()) for n in ("3_3", "4_3", "5_3")] == [10.0, 8.0, 5.0]


def test_from_file_loads_strictly_and_names_bad_keys(net: S3FDNet, save_sd, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)  # generated weights in the public format (a plain tensor dict)
    sd = {e["key"]: torch.randn(e["shape"], generator=gen) for e in MANIFEST["state_dict"]}
    path = tmp_path / "sfd_face.pth"
    torch.save(sd, path)
    det = S3FD.from_file(path)
    for k, v in sd.items():
        assert torch.equal(det.net.state_dict()[k], v), k
    assert not det.net.training and det.weights_path == path

    def bad(name, edit):
        p = tmp_path / name
        torch.save(edit(dict(sd)), p)
        return p

    with pytest.raises(WeightsError, match=r"s3fd_weights.*missing key.*conf\.0\.bias"):
        S3FD.from_file(bad("missing.pth", lambda d: {k: v for k, v in d.items() if k != "conf.0.bias"}))
    with pytest.raises(WeightsError, match=r"L2Norm3_3\.weight.*unexpected key.*l2norm3_3\.weight"):
        S3FD.from_file(bad("renamed.pth", lambda d: {k.replace("L2Norm3_3", "l2norm3_3"): v for k, v in d.items()}))
    with pytest.raises(WeightsError, match=r"shape mismatch.*conf\.0\.weight: file \(2, 256, 3, 3\)"):
        S3FD.from_file(bad("shape.pth", lambda d: {**d, "conf.0.weight": torch.zeros(2, 256, 3, 3)}))
    with pytest.raises(WeightsError, match=r"missing key.*vgg\.0\.weight"):  # a DataParallel prefix is not stripped
        S3FD.from_file(bad("module.pth", lambda d: {f"module.{k}": v for k, v in d.items()}))
    with pytest.raises(FileNotFoundError, match=r"detector\.weights: file .*nope\.pth"):
        S3FD.from_file(tmp_path / "nope.pth", config_key="detector.weights")


# ------------------------------------------------------------------------------------------------
# (b) post-processing: a straightforward re-implementation of the published code, on random outputs
# ------------------------------------------------------------------------------------------------


def ref_priors(imh: int, imw: int, maps) -> torch.Tensor:
    mean = []
    for k, (fh, fw) in enumerate(maps):
        for i, j in itertools.product(range(fh), range(fw)):
            f_kw, f_kh = imw / (4, 8, 16, 32, 64, 128)[k], imh / (4, 8, 16, 32, 64, 128)[k]
            s = (16, 32, 64, 128, 256, 512)[k]
            mean += [(j + 0.5) / f_kw, (i + 0.5) / f_kh, s / imw, s / imh]
    return torch.FloatTensor(mean).view(-1, 4)


def ref_nms(boxes, scores, overlap=0.3, top_k=5000):
    keep = scores.new(scores.size(0)).zero_().long()
    if boxes.numel() == 0:
        return keep, 0
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = torch.mul(x2 - x1, y2 - y1)
    _, idx = scores.sort(0)
    idx = idx[-top_k:]
    count = 0
    while idx.numel() > 0:
        i = idx[-1]
        keep[count] = i
        count += 1
        if idx.size(0) == 1:
            break
        idx = idx[:-1]
        xx1 = torch.index_select(x1, 0, idx).clamp(min=float(x1[i]))
        yy1 = torch.index_select(y1, 0, idx).clamp(min=float(y1[i]))
        xx2 = torch.index_select(x2, 0, idx).clamp(max=float(x2[i]))
        yy2 = torch.index_select(y2, 0, idx).clamp(max=float(y2[i]))
        inter = (xx2 - xx1).clamp(min=0.0) * (yy2 - yy1).clamp(min=0.0)
        iou = inter / ((torch.index_select(area, 0, idx) - inter) + area[i])
        idx = idx[iou.le(overlap)]
    return keep, count


def ref_detect(loc, conf, priors):  # Detect.forward for one image, face class: [750, 5]
    boxes = torch.cat((priors[:, :2] + loc[:, :2] * 0.1 * priors[:, 2:],
                       priors[:, 2:] * torch.exp(loc[:, 2:] * 0.2)), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    out = torch.zeros(750, 5)
    mask = conf[:, 1].gt(0.05)
    scores = conf[:, 1][mask]
    b = boxes[mask.unsqueeze(1).expand_as(boxes)].view(-1, 4)
    ids, count = ref_nms(b, scores)
    count = min(count, 750)
    out[:count] = torch.cat((scores[ids[:count]].unsqueeze(1), b[ids[:count]]), 1)
    return out


def ref_nms_numpy(dets, thresh):
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]))
        ovr = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return np.array(keep).astype(int)


class RandomHeads(torch.nn.Module):
    """The real network's feature-map sizes, with random loc offsets and face scores (many above 0.9)."""

    def __init__(self, net: S3FDNet, seed: int) -> None:
        super().__init__()
        self.net, self.gen, self.calls = net, torch.Generator().manual_seed(seed), []

    def forward(self, x):
        _, _, maps = self.net(x)
        p = sum(h * w for h, w in maps)
        loc = torch.randn(1, p, 4, generator=self.gen)
        conf = torch.softmax(3.0 * torch.randn(1, p, 2, generator=self.gen), dim=-1)
        self.calls.append((tuple(x.shape[2:]), maps, loc, conf))
        return loc, conf, maps


@pytest.mark.parametrize("hw,scales,conf_th", [((150, 230), (0.25, 0.5), 0.9), ((97, 61), (1.0,), 0.8)])
def test_post_processing_equals_the_reference_on_random_outputs(net, hw, scales, conf_th) -> None:
    heads = RandomHeads(net, seed=hw[0])
    got = S3FD(heads).detect_faces(_image(*hw), conf_th=conf_th, scales=scales)
    h, w = hw
    bboxes = np.empty((0, 5))
    for (imh, imw), maps, loc, conf in heads.calls:  # one call per scale
        det = ref_detect(loc[0], conf[0], ref_priors(imh, imw, maps))
        scale = torch.Tensor([w, h, w, h])
        j = 0
        while j < 750 and det[j, 0] > conf_th:
            pt = (det[j, 1:] * scale).numpy()
            bboxes = np.vstack((bboxes, (pt[0], pt[1], pt[2], pt[3], det[j, 0])))
            j += 1
    want = bboxes[ref_nms_numpy(bboxes, 0.1)]
    assert len(heads.calls) == len(scales) and len(want) >= 5  # the case is not trivial
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------------------
# (c) invariants of the whole detector (real network, random weights)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_boxes_are_in_input_pixels_for_any_scale(net: S3FDNet, scale: float) -> None:
    det = S3FD(net)
    img = _image(128, 192, seed=3)
    got = det.detect_faces(img, conf_th=0.3, scales=(scale,))
    small = resize_linear(img, fx=scale, fy=scale)  # the network sees exactly this at `scale`
    ref = det.detect_faces(small, conf_th=0.3, scales=(1.0,))
    assert len(got) > 0
    np.testing.assert_array_equal(got[:, :4], ref[:, :4] / scale)  # power-of-two scales: exact
    np.testing.assert_array_equal(got[:, 4], ref[:, 4])


def test_output_order_nms_and_empty(net: S3FDNet) -> None:
    det = S3FD(net)
    img = _image(64, 96, seed=4)
    out = det.detect_faces(img, conf_th=0.3, scales=(0.5, 1.0))
    assert out.ndim == 2 and out.shape[1] == 5 and len(out) > 1
    assert np.all(np.diff(out[:, 4]) <= 0) and np.all(out[:, 4] > 0.3)
    x1, y1, x2, y2 = (out[:, k] for k in range(4))
    inter = (np.clip(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0, None)
             * np.clip(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0, None))
    area = (x2 - x1) * (y2 - y1)
    iou = inter / (area[:, None] + area - inter)
    assert np.all(iou[~np.eye(len(out), dtype=bool)] <= 0.1)  # the final NMS at 0.1
    none = det.detect_faces(img, conf_th=1.0, scales=(0.5,))
    assert none.shape == (0, 5) and none.dtype == np.float64
    batch = det.detect_faces_batch(np.stack([img, img[::-1].copy()]), conf_th=0.3, scales=(0.5, 1.0), batch_size=2)
    np.testing.assert_allclose(batch[0], out, rtol=1e-5, atol=1e-3)  # batched convolutions: float rounding only
    with pytest.raises(ValueError, match="uint8 RGB"):
        det.detect_faces(img.astype(np.float32))
    with pytest.raises(ValueError, match="at scale 0.25 gives a 24x16 network input"):
        det.detect_faces(img)  # the reference's network fails on inputs under 28 pixels
