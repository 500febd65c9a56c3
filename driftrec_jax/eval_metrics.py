"""The metrics `driftrec evaluate` reports: a registry, name -> `Metric`, and `measure`.

Every column of evaluate's tables (results.md / .csv / .json, per_image.csv), of
scripts/readme_eval_table.py and scripts/sampler_study.py, and the axes of driftrec_jax.plots
come from `METRICS`, in its order. Adding a metric is one entry (docs/EVALUATE.md):

    METRICS["mae"] = Metric("mae", "MAE", scale=100, scale_text="×100", higher_is_better=False,
                            fmt=".2f", image=lambda x, y, convention: float(np.abs(x - y).mean()))

Two kinds of metric:
  per image (`image=`)  f(measured, clean, convention) -> float, on one (H, W, C) pair in [0, 1]; the
                        table row holds the mean over its images (paper Sec. IV-B: SSIM, PSNR,
                        PSNR-B, BEF, LPIPS);
  per row (`row=`)      f(features of the row's images, features of their originals) -> float, on
                        Inception-v3 features (FID, KID; only with `evaluate --fid`); a Markdown
                        table shows their columns only where some row has a value.

Values are stored raw (LPIPS in [0, 1], BEF on the [0, 1] pixel scale) in every file; `scale`
applies only where a value is displayed. No JAX import here (the scripts read tables without it);
the metric functions import driftrec_jax.metrics when they run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

__all__ = ["Metric", "METRICS", "CONVENTIONS", "image_metrics", "row_metrics", "ordered", "as_measured", "measure",
           "format_value"]

# Metric conventions (docs/EVALUATE.md): SSIM convention and PSNR-B/BEF convention of driftrec_jax.metrics.
CONVENTIONS: dict[str, tuple[str, str]] = {
    "driftrec": ("driftrec", "torchjpeg"),  # the DriftRec authors' (skimage win 9; torchjpeg BEF)
    "fbcnn": ("fbcnn", "fbcnn"),  # FBCNN's (Gaussian SSIM; BEF on Y); used for grayscale sets
}
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, what Pillow's convert("L") uses


@dataclasses.dataclass(frozen=True)
class Metric:
    """One reported metric.

    name: the key in rows, cache.jsonl, CSV and JSON. title: its column title ("LPIPS").
    higher_is_better: ↑ or ↓ in titles. scale, scale_text: displayed value = scale × raw value,
    and how the title says so ("×100"). fmt: format spec of a displayed value.
    image: per-image function (measured, clean, convention) -> float; or
    row: per-row function (features of the row's images, of their originals) -> float.
    needs: "lpips" (AlexNet weights; skipped, NaN, with --no-lpips), "inception" (--fid) or "".
    unit: of the raw value, for plot axes ("dB").
    """

    name: str
    title: str
    higher_is_better: bool
    fmt: str
    scale: float = 1.0
    scale_text: str = ""
    image: Callable[[np.ndarray, np.ndarray, str], float] | None = None
    row: Callable[[np.ndarray, np.ndarray], float] | None = None
    needs: str = ""
    unit: str = ""

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def label(self) -> str:
        """Title with its display scale: 'LPIPS ×100'."""
        return f"{self.title} {self.scale_text}" if self.scale_text else self.title

    @property
    def header(self) -> str:
        """Column title of evaluate's Markdown tables: 'LPIPS ×100 ↓'."""
        return f"{self.label} {self.arrow}"

    @property
    def compact(self) -> str:
        """Short title without spaces or arrow (the sampler study's columns): 'LPIPS×100'."""
        return self.title + self.scale_text

    @property
    def axis_label(self) -> str:
        """Plot axis title: 'PSNR dB (higher is better)'."""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.title}{unit}{' ' + self.scale_text if self.scale_text else ''} " \
               f"({'higher' if self.higher_is_better else 'lower'} is better)"

    def display(self, value: float) -> float:
        return self.scale * value if self.scale != 1 else value


def format_value(value, spec: str, missing: str = "—") -> str:
    """`value` formatted by `spec`; `missing` for None and NaN."""
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


# --------------------------------------------------------------------------------------------
# The functions (x: the measured image, y: the original, both (H, W, C) in [0, 1])


def _ssim(x, y, convention: str) -> float:
    from . import metrics as M

    return float(M.ssim(x, y, convention=CONVENTIONS[convention][0]))


def _psnr(x, y, convention: str) -> float:
    from . import metrics as M

    return float(M.psnr(x, y))


def _psnrb(x, y, convention: str) -> float:
    from . import metrics as M

    return float(M.psnrb(x, y, convention=CONVENTIONS[convention][1]))


def _lpips(x, y, convention: str) -> float:
    from . import metrics as M

    return float(M.lpips(x, y))


def _bef(x, y, convention: str) -> float:
    from . import metrics as M

    return float(M.bef(x, convention=CONVENTIONS[convention][1]))  # of the restored image alone


def _fid(fx, fy) -> float:
    from . import fid as F

    return F.fid_from_features(fx, fy)


def _kid(fx, fy) -> float:
    from . import fid as F

    return F.kid_from_features(fx, fy)


# The registry: column order of every table (paper Tables II-III: SSIM, PSNR, PSNR-B up; LPIPS x 100
# and BEF x 10^4 down; then the set metrics).
METRICS: dict[str, Metric] = {
    m.name: m for m in (
        Metric("ssim", "SSIM", True, ".3f", image=_ssim),
        Metric("psnr", "PSNR", True, ".2f", image=_psnr, unit="dB"),
        Metric("psnrb", "PSNR-B", True, ".2f", image=_psnrb, unit="dB"),
        Metric("lpips", "LPIPS", False, ".1f", 100.0, "×100", image=_lpips, needs="lpips"),
        Metric("bef", "BEF", False, ".1f", 1e4, "×10⁴", image=_bef),
        Metric("fid", "FID", False, ".2f", row=_fid, needs="inception"),
        Metric("kid", "KID", False, ".2f", 100.0, "×100", row=_kid, needs="inception"),
    )
}


def image_metrics() -> list[Metric]:
    """The per-image metrics, in registry order."""
    return [m for m in METRICS.values() if m.image is not None]


def row_metrics() -> list[Metric]:
    """The per-row (feature-set) metrics, in registry order."""
    return [m for m in METRICS.values() if m.row is not None]


def ordered(metrics, first=()) -> list[Metric]:
    """`metrics` with the named ones first (in the order named), the rest in registry order:
    tables that lead with PSNR (README, sampler study) still get every new metric."""
    metrics = list(metrics)
    head = [m for name in first for m in metrics if m.name == name]
    return head + [m for m in metrics if m.name not in first]


# --------------------------------------------------------------------------------------------
# Measuring one image


def _to_gray(x: np.ndarray) -> np.ndarray:
    return np.tensordot(x, _LUMA, axes=([-1], [0]))[..., None].astype(np.float32)


def as_measured(restored: np.ndarray, channels: int) -> np.ndarray:
    """The 8-bit image that is measured (and saved): `restored` clipped and rounded to 8 bits;
    for a 1-channel original, the ITU-R 601 luma of the 8-bit RGB restoration, rounded again."""
    from . import metrics as M

    x = np.asarray(M.quantize_uint8(restored))
    if channels == 1 and x.shape[-1] == 3:
        x = np.asarray(M.quantize_uint8(_to_gray(x)))
    return x


def measure(restored: np.ndarray, clean: np.ndarray, convention: str = "driftrec", lpips: bool = True) -> dict:
    """Every per-image metric of `METRICS` (SSIM, PSNR, PSNR-B, LPIPS, BEF of the restored image)
    of one (H, W, C) image pair, as {name: float}.

    `restored` is clipped to [0, 1] and rounded to 8 bits first; a 3-channel restoration of a
    1-channel original is measured through its luma. `convention`: a key of `CONVENTIONS`.
    `lpips=False` skips the metrics that need the LPIPS weights (their value is NaN).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose {', '.join(CONVENTIONS)}")
    y = np.asarray(clean, np.float32)
    x = as_measured(restored, y.shape[-1])
    if x.shape != y.shape:
        raise ValueError(f"restored image {x.shape} and original {y.shape} differ in shape")
    return {m.name: (float("nan") if m.needs == "lpips" and not lpips else float(m.image(x, y, convention)))
            for m in image_metrics()}
