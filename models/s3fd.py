"""S3FD face detector as the standard Sync-C/Sync-D pipeline runs it (joonson/syncnet_python, detectors/s3fd).

S3FD: "Single Shot Scale-invariant Face Detector", Zhang et al., ICCV 2017. Module attribute names
equal the public ``sfd_face.pth`` keys (a plain state dict, 65 tensors, 22 459 110 parameters), so
the file loads strictly (`S3FD.from_file`). `S3FD.detect_faces` computes what syncnet_python's
``S3FD.detect_faces`` computes (docs/metrics.md, "S3FD"):

    per scale s: uint8 RGB → cv2-exact bilinear resize by s (models.cv_resize) → CHW float32,
    R−123, G−117, B−104 (no 1/255, no std) → S3FDNet → softmax face scores + boxes decoded against
    priors of the actual feature-map sizes (variances 0.1, 0.2) → per image: score > 0.05, top 5000,
    greedy NMS IoU 0.3, top 750 → rows with score > conf_th, corners × original (w, h, w, h)
    → over all scales: greedy numpy NMS IoU 0.1 → (N, 5) [x1, y1, x2, y2, score] by descending score.

Two deliberate differences: more than 750 rows above conf_th stop at 750 (the reference raises
IndexError), and `detect_faces_batch` (same-size frames through the network together, for
throughput) may differ from the single-image method by float rounding of batched convolutions.

Shape legend: P priors (all levels) · N images · H, W input pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.cv_resize import resize_linear
from models.weights import load_strict

CONFIG_KEY = "s3fd_weights"
MEAN_RGB = (123.0, 117.0, 104.0)  # the reference subtracts (104, 117, 123) from BGR
MIN_SIZES = (16, 32, 64, 128, 256, 512)  # PriorBox, one square prior per cell
STEPS = (4, 8, 16, 32, 64, 128)
VARIANCES = (0.1, 0.2)
CONF_THRESH = 0.05  # Detect: candidates
NMS_THRESH = 0.3
NMS_TOP_K = 5000
TOP_K = 750
FINAL_NMS = 0.1  # detect_faces: over all scales
MIN_INPUT = 28  # smallest network input side: pool5 needs a 2-pixel map (the reference crashes below it)

# ------------------------------------------------------------------------------------------------
# The network (S3FDNet): VGG16 + fc6/fc7 + extras, six sources, loc/conf heads
# ------------------------------------------------------------------------------------------------


class L2Norm(nn.Module):
    """x / (‖x‖₂ over channels + 1e-10) · per-channel weight (initialised to `scale`)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _vgg() -> nn.ModuleList:
    """vgg.0 … vgg.34: conv1_1 … conv5_3 (3×3, pad 1, ReLU), pools 2×2/2 (pool3 ceil_mode), pool5, fc6, fc7."""
    layers: list[nn.Module] = []
    cin = 3
    for block, (cout, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        for _ in range(convs):
            layers += [nn.Conv2d(cin, cout, 3, 1, padding=1), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=block == 2))  # vgg.4, 9, 16 (ceil), 23, 30
    layers += [nn.Conv2d(512, 1024, 3, 1, padding=6, dilation=6), nn.ReLU(inplace=True),  # fc6: vgg.31
               nn.Conv2d(1024, 1024, 1, 1), nn.ReLU(inplace=True)]  # fc7: vgg.33
    return nn.ModuleList(layers)


class S3FDNet(nn.Module):
    """uint8-range RGB − mean (N, 3, H, W) → loc (N, P, 4), face/background softmax (N, P, 2), map sizes."""

    SOURCES = (16, 23, 30)  # conv3_3, conv4_3, conv5_3 end before these vgg indices (L2Norm sources)

    def __init__(self) -> None:
        super().__init__()
        self.vgg = _vgg()
        self.L2Norm3_3 = L2Norm(256, 10)
        self.L2Norm4_3 = L2Norm(512, 8)
        self.L2Norm5_3 = L2Norm(512, 5)
        self.extras = nn.ModuleList([nn.Conv2d(1024, 256, 1, 1), nn.Conv2d(256, 512, 3, 2, padding=1),
                                     nn.Conv2d(512, 128, 1, 1), nn.Conv2d(128, 256, 3, 2, padding=1)])
        src_ch = (256, 512, 512, 1024, 512, 256)
        self.loc = nn.ModuleList([nn.Conv2d(c, 4, 3, 1, padding=1) for c in src_ch])
        # conf on conv3_3 has 4 channels: 3 background logits (max-out) + 1 face logit
        self.conf = nn.ModuleList([nn.Conv2d(c, 4 if k == 0 else 2, 3, 1, padding=1) for k, c in enumerate(src_ch)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        sources = []
        start = 0
        for end, norm in zip(self.SOURCES, (self.L2Norm3_3, self.L2Norm4_3, self.L2Norm5_3)):
            for k in range(start, end):
                x = self.vgg[k](x)
            sources.append(norm(x))
            start = end
        for k in range(start, len(self.vgg)):
            x = self.vgg[k](x)
        sources.append(x)  # fc7
        for k, layer in enumerate(self.extras):
            x = F.relu(layer(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)  # the two stride-2 extras
        conf0 = self.conf[0](sources[0])  # (N, 4, h, w)
        max_bg, _ = torch.max(conf0[:, 0:3], dim=1, keepdim=True)
        confs = [torch.cat((max_bg, conf0[:, 3:]), dim=1)] + [c(s) for c, s in zip(self.conf[1:], sources[1:])]
        locs = [lo(s) for lo, s in zip(self.loc, sources)]
        maps = [(int(t.shape[2]), int(t.shape[3])) for t in locs]
        n = x.shape[0]
        loc = torch.cat([t.permute(0, 2, 3, 1).contiguous().view(n, -1) for t in locs], 1).view(n, -1, 4)
        conf = torch.cat([t.permute(0, 2, 3, 1).contiguous().view(n, -1) for t in confs], 1).view(n, -1, 2)
        return loc, torch.softmax(conf, dim=-1), maps


# ------------------------------------------------------------------------------------------------
# Post-processing: priors, decoding, per-image detection, back to image pixels, the final NMS
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _priors_np(input_hw: tuple[int, int], maps: tuple[tuple[int, int], ...]) -> np.ndarray:
    imh, imw = input_hw
    rows = []
    for k, (fh, fw) in enumerate(maps):
        f_kw, f_kh = imw / STEPS[k], imh / STEPS[k]  # spacing from the input size, grid from the map
        i, j = np.meshgrid(np.arange(fh, dtype=np.float64), np.arange(fw, dtype=np.float64), indexing="ij")
        cx, cy = (j.ravel() + 0.5) / f_kw, (i.ravel() + 0.5) / f_kh
        rows.append(np.stack([cx, cy, np.full_like(cx, MIN_SIZES[k] / imw), np.full_like(cy, MIN_SIZES[k] / imh)], 1))
    return np.concatenate(rows).astype(np.float32)  # built in float64, stored as float32


def prior_boxes(input_hw: tuple[int, int], maps: Sequence[tuple[int, int]]) -> Tensor:
    """(P, 4) float32 (cx, cy, w, h) normalised to the network input: one square prior per map cell."""
    return torch.from_numpy(_priors_np(tuple(input_hw), tuple(tuple(m) for m in maps)).copy())


def decode(loc: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """(P, 4) offsets + (P, 4) priors → (P, 4) corners (x1, y1, x2, y2), normalised."""
    boxes = torch.cat((priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
                       priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def nms(boxes: Tensor, scores: Tensor, overlap: float = NMS_THRESH, top_k: int = NMS_TOP_K) -> tuple[Tensor, int]:
    """Greedy NMS of the reference (box_utils.nms): the `top_k` best, suppress IoU > overlap → (keep, count)."""
    keep = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    if boxes.numel() == 0:
        return keep, 0
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = torch.mul(x2 - x1, y2 - y1)
    _, idx = scores.sort(0)  # ascending
    idx = idx[-top_k:]
    count = 0
    while idx.numel() > 0:
        i = idx[-1]
        keep[count] = i
        count += 1
        if idx.size(0) == 1:
            break
        idx = idx[:-1]
        xx1 = torch.clamp(torch.index_select(x1, 0, idx), min=x1[i])
        yy1 = torch.clamp(torch.index_select(y1, 0, idx), min=y1[i])
        xx2 = torch.clamp(torch.index_select(x2, 0, idx), max=x2[i])
        yy2 = torch.clamp(torch.index_select(y2, 0, idx), max=y2[i])
        w = torch.clamp(xx2 - xx1, min=0.0)
        h = torch.clamp(yy2 - yy1, min=0.0)
        inter = w * h
        union = (torch.index_select(area, 0, idx) - inter) + area[i]
        idx = idx[(inter / union).le(overlap)]
    return keep, count


def detect(loc: Tensor, conf: Tensor, priors: Tensor) -> Tensor:
    """One image: loc (P, 4), softmax (P, 2), priors (P, 4) → (count ≤ 750, 5) rows (score, x1, y1, x2, y2)
    of the face class, descending score, normalised corners (the reference's Detect.forward)."""
    boxes = decode(loc, priors.to(loc.device))
    mask = conf[:, 1].gt(CONF_THRESH)
    scores = conf[:, 1][mask]
    boxes_ = boxes[mask.unsqueeze(1).expand_as(boxes)].view(-1, 4)
    ids, count = nms(boxes_, scores, NMS_THRESH, NMS_TOP_K)
    count = min(count, TOP_K)
    return torch.cat((scores[ids[:count]].unsqueeze(1), boxes_[ids[:count]]), 1).cpu()


def to_image(rows: Tensor, width: int, height: int, conf_th: float) -> np.ndarray:
    """Rows (score, x1, y1, x2, y2) with score > conf_th (leading run) → (n, 5) [x1, y1, x2, y2, score] in
    pixels of the ORIGINAL image (corners × (w, h, w, h) in float32), as float64."""
    n = 0
    while n < rows.shape[0] and rows[n, 0] > conf_th:
        n += 1
    pts = (rows[:n, 1:] * torch.tensor([width, height, width, height], dtype=torch.float32)).numpy()
    return np.concatenate([pts, rows[:n, :1].numpy()], 1).astype(np.float64).reshape(-1, 5)


def nms_numpy(dets: np.ndarray, thresh: float = FINAL_NMS) -> np.ndarray:
    """Greedy NMS over (n, 5) [x1, y1, x2, y2, score] (the reference's nms_): indices, best first."""
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1) * np.maximum(0.0, yy2 - yy1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return np.array(keep, dtype=np.int64)


def preprocess(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 RGB (H, W, 3) → float32 (3, h, w) at `scale` (cv2-exact resize), minus the RGB means."""
    img = image if scale == 1 else resize_linear(image, fx=scale, fy=scale)
    x = np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32)
    return x - np.asarray(MEAN_RGB, np.float32)[:, None, None]


# ------------------------------------------------------------------------------------------------
# The detector
# ------------------------------------------------------------------------------------------------


class S3FD:
    """S3FD with the reference's pre- and post-processing; `detect_faces` is the contract."""

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu", weights_path: str | Path | None = None):
        self.net = net.to(torch.device(device)).eval()
        self.weights_path = weights_path

    @property
    def device(self) -> torch.device:
        """Where the network is (it may be moved later, e.g. by a metric's `.to()`)."""
        p = next(iter(self.net.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    @classmethod
    def from_file(cls, path: str | Path | None, device: str | torch.device = "cpu",
                  config_key: str = CONFIG_KEY) -> S3FD:
        """Load the public `sfd_face.pth` strictly by its key names (errors name `config_key` and the key)."""
        net = load_strict(S3FDNet(), path, config_key, strip_prefixes=())
        return cls(net, device, weights_path=path)

    @torch.inference_mode()
    def _rows(self, batch: np.ndarray) -> list[Tensor]:
        x = torch.from_numpy(batch).to(self.device)  # (N, 3, h, w)
        loc, conf, maps = self.net(x)
        priors = prior_boxes(tuple(x.shape[2:]), maps)
        return [detect(loc[i], conf[i], priors) for i in range(x.shape[0])]

    def detect_faces(self, image: np.ndarray, conf_th: float = 0.9, scales: Sequence[float] = (0.25,)) -> np.ndarray:
        """uint8 RGB (H, W, 3) → float64 (N, 5) [x1, y1, x2, y2, score] in input pixels, best first."""
        return self.detect_faces_batch(image[None], conf_th, scales, batch_size=1)[0]

    def detect_faces_batch(self, images: np.ndarray | Sequence[np.ndarray], conf_th: float = 0.9,
                           scales: Sequence[float] = (0.25,), batch_size: int = 16) -> list[np.ndarray]:
        """`detect_faces` for each of several same-size frames, `batch_size` at a time through the network."""
        if len(images) == 0:
            return []
        h, w = images[0].shape[:2]
        for im in images:
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3 or im.shape[:2] != (h, w):
                raise ValueError(f"S3FD needs uint8 RGB (H, W, 3) frames of one size, got {im.dtype} {im.shape}")
        per_image: list[list[np.ndarray]] = [[] for _ in images]
        for s in scales:
            ih, iw = (h, w) if s == 1 else (int(np.rint(h * s)), int(np.rint(w * s)))
            if min(ih, iw) < MIN_INPUT:
                raise ValueError(f"S3FD: a {w}x{h} frame at scale {s} gives a {iw}x{ih} network input; S3FD needs "
                                 f"at least {MIN_INPUT} pixels a side: use a larger scale (facedet scale)")
            for b in range(0, len(images), batch_size):
                batch = np.stack([preprocess(im, s) for im in images[b : b + batch_size]])
                for k, rows in enumerate(self._rows(batch)):
                    per_image[b + k].append(to_image(rows, w, h, conf_th))
        out = []
        for parts in per_image:
            dets = np.concatenate(parts) if parts else np.empty((0, 5))
            out.append(dets[nms_numpy(dets, FINAL_NMS)] if len(dets) else np.empty((0, 5)))
        return out
