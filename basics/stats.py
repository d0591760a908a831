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
    def no_spread(self) -> bool:
        """True when two or more seeds all differ by exactly the same amount (a metric counted in examples can):
        the t-interval has zero width, which says nothing about the run-to-run spread, so it decides nothing."""
        return _constant(self.differences)

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or below 0 (a difference detected)."""
        return direction(self) in (1, -1)

    def to_dict(self) -> dict:
        return {**asdict(self), "seeds": list(self.seeds), "differences": list(self.differences)}

    def format(self, digits: int = 2) -> str:
        """``"−0.13 [−1.57, +1.31]"`` (``"+0.40 (n=1)"`` without an interval)."""
        if self.low is None:
            return f"{signed(self.mean, digits)} (n={self.n})"
        if self.no_spread:
            return f"{signed(self.mean, digits)} (n={self.n}, {NO_SPREAD})"
        return f"{signed(self.mean, digits)} [{signed(self.low, digits)}, {signed(self.high, digits)}]"


NO_SPREAD = "the same on every seed"  # a difference without spread: no interval (PairedDifference.no_spread)


def from_dict(diff: Mapping) -> PairedDifference:
    """A :class:`PairedDifference` back from its :meth:`PairedDifference.to_dict` (a hand-made one may give only
    the mean and the interval)."""
    differences = tuple(diff.get("differences") or ())
    return PairedDifference(diff["mean"], diff.get("low"), diff.get("high"), diff.get("n", len(differences)),
                            tuple(diff.get("seeds") or ()), differences)


SAME_DIGITS = 9  # differences equal to this many decimals are the same (a float sum's last bits are noise)


def _constant(differences: Sequence[float]) -> bool:
    return len(differences) >= 2 and len({round(float(d), SAME_DIGITS) for d in differences}) == 1


def no_spread(diff: PairedDifference | Mapping | None) -> bool:
    """:attr:`PairedDifference.no_spread` of a difference or of its dict (:meth:`PairedDifference.to_dict`)."""
    if diff is None:
        return False
    return _constant(diff.differences if isinstance(diff, PairedDifference) else diff.get("differences") or ())


def direction(diff: PairedDifference | Mapping | None) -> int | None:
    """+1 / -1 when the 95 % interval lies above / below 0 (a difference detected), 0 when it holds 0, and None
    when there is no interval to judge: no seed shared, one seed, or no spread (every seed the same difference)."""
    if diff is None:
        return None
    low, high = (diff.low, diff.high) if isinstance(diff, PairedDifference) else (diff.get("low"), diff.get("high"))
    if low is None or no_spread(diff):
        return None
    return 1 if low > 0 else -1 if high < 0 else 0


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
    ``t(n-1) · sd / sqrt(n) <= half_width``. None with fewer than 2 differences, when they have no spread (every
    seed the same difference: a pilot that shows no spread cannot size anything), or when more than ``limit``."""
    if half_width <= 0:
        raise ValueError(f"half_width must be > 0, got {half_width}")
    if len(differences) < 2 or _constant(differences):
        return None
    sd = statistics.stdev(differences)
    for n in range(2, limit + 1):
        if t_quantile(n - 1, confidence) * sd / math.sqrt(n) <= half_width:
            return n
    return None
