"""Small statistics over seeds: mean and sample standard deviation, and paired differences with a
95 % t-interval (two-sided, Student's t with n - 1 degrees of freedom; scipy gives the quantile)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); the deviation is 0.0 for a single value."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided ``confidence`` quantile of Student's t with ``df`` degrees of freedom (df=2: 4.303)."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom, got {df}")
    from scipy.stats import t as student_t  # third-party, heavy (0.5 s): loaded when an interval is needed

    return float(student_t.ppf(0.5 + confidence / 2, df))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over the seeds both have, with its 95 % t-interval (None with one seed).

    ``seeds``: the seeds paired, in order; ``differences``: ``a - b`` per seed.
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    seeds: tuple
    differences: tuple[float, ...]

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or below 0 (a difference detected)."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        return {**asdict(self), "seeds": list(self.seeds), "differences": list(self.differences)}

    def format(self, digits: int = 2) -> str:
        """``"−0.13 [−1.57, +1.31]"`` (``"+0.40 (n=1)"`` without an interval)."""
        if self.low is None:
            return f"{signed(self.mean, digits)} (n={self.n})"
        return f"{signed(self.mean, digits)} [{signed(self.low, digits)}, {signed(self.high, digits)}]"


def signed(x: float, digits: int = 2) -> str:
    """``x`` with an explicit sign and a real minus sign: ``+0.40``, ``−1.57``, ``0.00`` for zero."""
    text = f"{abs(x):.{digits}f}"
    if float(text) == 0:
        return text
    return ("+" if x > 0 else "−") + text


def paired_difference(a: Mapping, b: Mapping, confidence: float = CONFIDENCE) -> PairedDifference | None:
    """``a - b`` paired by key (seed): ``a`` and ``b`` map a seed to a value. None when no seed is shared.

    The interval is ``mean ± t(n-1) · sd / sqrt(n)`` over the paired differences (none with n = 1).
    """
    seeds = [s for s in a if s in b]
    if not seeds:
        return None
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(mean, None, None, 1, tuple(seeds), tuple(diffs))
    half = t_quantile(len(diffs) - 1, confidence) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return PairedDifference(mean, mean - half, mean + half, len(diffs), tuple(seeds), tuple(diffs))


def seeds_needed(differences: Sequence[float], half_width: float, confidence: float = CONFIDENCE,
                 limit: int = 1000) -> int | None:
    """The fewest seeds ``n >= 2`` whose paired t-interval has a half-width of at most ``half_width``, taking the
    sample standard deviation of ``differences`` (a pilot's paired differences) as the true one:
    ``t(n-1) · sd / sqrt(n) <= half_width``. None with fewer than 2 differences, or when more than ``limit``."""
    if half_width <= 0:
        raise ValueError(f"half_width must be > 0, got {half_width}")
    if len(differences) < 2:
        return None
    sd = statistics.stdev(differences)
    for n in range(2, limit + 1):
        if t_quantile(n - 1, confidence) * sd / math.sqrt(n) <= half_width:
            return n
    return None
