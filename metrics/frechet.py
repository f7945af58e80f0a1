"""Shared Fréchet core: float64 streaming Gaussian statistics and the symmetric-eigen trace term.

FD(N(μ1, Σ1), N(μ2, Σ2)) = ‖μ1 − μ2‖² + Tr Σ1 + Tr Σ2 − 2·Tr (Σ1 Σ2)^{1/2}

Tr (Σ1 Σ2)^{1/2} = Σ √λ_i(A Σ2 A) with A = Σ1^{1/2} (symmetric, via eigh): the matrix A Σ2 A is
symmetric PSD, so only `eigh`/`eigvalsh` are needed, never complex arithmetic and never
`scipy.linalg.sqrtm` (whose `disp` argument is removed in SciPy 1.18).

Shape legend: N samples · D feature dim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

COVARIANCES = ("unbiased", "biased")


def _as_f64(x: Tensor | np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).detach().to("cpu", torch.float64)


def sqrtm_psd(sigma: Tensor) -> Tensor:
    """Symmetric PSD square root (D, D) → (D, D) by eigh; negative eigenvalues (round-off) clamp to 0."""
    w, v = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """Tr (Σ1 Σ2)^{1/2} in float64 by the symmetric eigen method."""
    s1, s2 = _as_f64(sigma1), _as_f64(sigma2)
    a = sqrtm_psd(s1)  # (D, D)
    m = a @ s2 @ a
    lam = torch.linalg.eigvalsh((m + m.T) / 2)  # (D,)
    return lam.clamp_min(0).sqrt().sum()


def frechet_distance(
    mu1: Tensor | np.ndarray, sigma1: Tensor | np.ndarray, mu2: Tensor | np.ndarray, sigma2: Tensor | np.ndarray
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); mu (D,), sigma (D, D) → float (float64 math)."""
    m1, m2, s1, s2 = _as_f64(mu1), _as_f64(mu2), _as_f64(sigma1), _as_f64(sigma2)
    if m1.shape != m2.shape or m1.dim() != 1:
        raise ValueError(f"means must both be (D,), got {tuple(m1.shape)} and {tuple(m2.shape)}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}), got {tuple(s1.shape)} and {tuple(s2.shape)}")
    diff = (m1 - m2).square().sum()
    return float(diff + s1.trace() + s2.trace() - 2 * trace_sqrt_product(s1, s2))


def mean_cov_from_sums(n: Tensor | int, s: Tensor, ss: Tensor, covariance: str = "unbiased") -> tuple[Tensor, Tensor]:
    """Streaming sums (n, Σx (D,), Σxxᵀ (D, D)) → mean (D,), covariance (D, D) in float64."""
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    n = int(n)
    if n < 2:
        raise RuntimeError(f"more than one sample is required per side to compute a Fréchet distance, got {n}")
    s, ss = s.to(torch.float64), ss.to(torch.float64)
    mu = s / n
    scatter = ss - n * torch.outer(mu, mu)  # Σ (x−μ)(x−μ)ᵀ
    cov = scatter / (n - 1 if covariance == "unbiased" else n)
    return mu, (cov + cov.T) / 2


def feature_stats(features: Tensor | np.ndarray, covariance: str = "unbiased") -> tuple[Tensor, Tensor]:
    """One-shot (N, D) features → mean (D,), covariance (D, D) in float64."""
    x = _as_f64(features)
    return mean_cov_from_sums(x.shape[0], x.sum(0), x.T @ x, covariance)


class FeatureNetHolder:
    """Mixin: feature networks held outside `nn.Module` registration, so no checkpoint ever saves them.

    The network still follows `.to(device)` (through `_apply`) and is always in eval mode.
    """

    _hidden_nets: tuple[str, ...] = ()

    def _hide_net(self, name: str, net: torch.nn.Module | None) -> None:
        if net is not None:
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
        object.__setattr__(self, name, net)
        if name not in self._hidden_nets:
            self._hidden_nets = (*self._hidden_nets, name)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        this = super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
        for name in self._hidden_nets:
            net = getattr(this, name, None)
            if net is not None:
                net._apply(fn)
        return this


class FrechetDistance(Metric):
    """Streaming Fréchet distance between real and fake feature sets (float64 sums, synced by sum)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self, num_features: int, covariance: str = "unbiased", reset_real_features: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.num_features = num_features
        self.covariance = covariance
        self.reset_real_features = reset_real_features
        d = num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_features_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_features_cov_sum", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_features_num_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def extract(self, inputs: Tensor) -> Tensor:
        """Inputs → features (N, D); identity here, overridden by FVD and friends."""
        return inputs

    def update(self, inputs: Tensor, real: bool) -> None:
        """Add one batch (N, …) to the real or fake side (one feature row per input item)."""
        feats = self.extract(inputs)
        if feats.dim() != 2 or feats.shape[1] != self.num_features:
            raise ValueError(f"features must be (N, {self.num_features}), got {tuple(feats.shape)}")
        feats = feats.detach().to(self.real_features_sum.device, torch.float64)
        side = "real" if real else "fake"
        setattr(self, f"{side}_features_sum", getattr(self, f"{side}_features_sum") + feats.sum(0))
        setattr(self, f"{side}_features_cov_sum", getattr(self, f"{side}_features_cov_sum") + feats.T @ feats)
        setattr(self, f"{side}_features_num_samples", getattr(self, f"{side}_features_num_samples") + feats.shape[0])

    def side_stats(self, real: bool) -> tuple[Tensor, Tensor]:
        """Mean (D,) and covariance (D, D) of one side, float64."""
        side = "real" if real else "fake"
        return mean_cov_from_sums(
            getattr(self, f"{side}_features_num_samples"),
            getattr(self, f"{side}_features_sum"),
            getattr(self, f"{side}_features_cov_sum"),
            self.covariance,
        )

    def compute(self) -> Tensor:
        """Fréchet distance (float64 scalar tensor)."""
        mu_r, cov_r = self.side_stats(real=True)
        mu_f, cov_f = self.side_stats(real=False)
        # compute() runs on synced states: remember the global counts for protocol()
        self._synced_counts = (int(self.real_features_num_samples), int(self.fake_features_num_samples))
        return torch.tensor(frechet_distance(mu_r, cov_r, mu_f, cov_f), dtype=torch.float64)

    def reset(self) -> None:
        if self.reset_real_features:
            return super().reset()
        keep = {k: getattr(self, k).clone() for k in self._defaults if k.startswith("real_")}
        super().reset()
        for k, v in keep.items():
            setattr(self, k, v)

    def protocol(self) -> dict[str, Any]:
        """Knobs and sample counts to print next to the number."""
        return {
            "metric": type(self).__name__,
            "num_features": self.num_features,
            "covariance": self.covariance,
            "trace_method": "symmetric_eigh_float64",
            **frechet_counts(self),
        }


def frechet_counts(metric: Any) -> dict[str, int]:
    """Global (all-rank) sample counts seen by the last compute(), else this rank's counts."""
    synced = getattr(metric, "_synced_counts", None)
    if synced is None:
        synced = (int(metric.real_features_num_samples), int(metric.fake_features_num_samples))
    return {"n_real": synced[0], "n_fake": synced[1],
            "counts_synced": getattr(metric, "_synced_counts", None) is not None}
