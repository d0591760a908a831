"""What every results table shows beside a score: the paired difference to its dense baseline on the same
seeds (with a 95 % t-interval), and whether the score is above the constant-prediction baseline.

- :func:`by_seed`: ``{seed: value}`` from a row's ``seeds`` and values lists (the form the study JSONs keep);
- :func:`versus`: ``a - b`` paired by seed (:func:`basics.stats.paired_difference`) as a JSON dict;
- :func:`learnt_mark`: ``" †"`` after a cell whose task score is below baseline + one dev-set standard
  error (:func:`tasks.baseline.is_learnt`), ``""`` otherwise or when the baseline is unknown;
- :func:`baseline_of`: a report's own recorded baseline, else the given ones (the committed
  ``experiments/results/dev_baselines.json`` when re-rendering committed results).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from basics.stats import PairedDifference, from_dict, paired_difference, signed
from tasks.baseline import Baseline, is_learnt

NOT_LEARNT = "†"


def by_seed(seeds: Sequence, values: Sequence[float]) -> dict:
    """``{seed: value}``; UserError-free: lists of different lengths are a bug in the caller."""
    if len(seeds) != len(values):
        raise ValueError(f"{len(seeds)} seeds but {len(values)} values")
    return dict(zip(seeds, values, strict=True))


def versus(a: Mapping, b: Mapping) -> dict | None:
    """``a - b`` over their shared seeds as a dict (mean, low, high, n, seeds, differences), or None."""
    diff = paired_difference(a, b)
    return diff.to_dict() if diff is not None else None


def format_versus(diff: Mapping | PairedDifference | None, digits: int = 2) -> str:
    """``"−0.13 [−1.57, +1.31]"``, ``"+0.40 (n=1)"``, ``"+1.44 (n=2, the same on every seed)"``, or ``"–"``."""
    if diff is None:
        return "–"
    return (from_dict(diff) if isinstance(diff, Mapping) else diff).format(digits)


def learnt_mark(score: float | None, baseline: Baseline | None) -> str:
    """``" †"`` when ``score`` is not learnt (below baseline + 1 SE), else ``""``."""
    if score is None or baseline is None or is_learnt(score, baseline):
        return ""
    return f" {NOT_LEARNT}"


def baseline_of(report: Mapping[str, Any], task: str, baselines: Mapping[str, Baseline] | None) -> Baseline | None:
    """The baseline a report recorded for ``task`` (``report["baseline"]``), else ``baselines[task]``."""
    if report.get("baseline"):
        return Baseline.from_dict(report["baseline"])
    return (baselines or {}).get(task)


def pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``"76.10 ± 1.61"``; ``"–"`` without a mean."""
    return "–" if mean is None else f"{mean:.{digits}f} ± {(std or 0.0):.{digits}f}"


def baseline_legend(baseline: Baseline | None) -> str:
    """One sentence: the baseline, its standard error, and what † means."""
    if baseline is None:
        return "No dev labels were available to compute the constant-prediction baseline: no † marks."
    n = "+".join(str(v) for v in baseline.n.values())
    what = f"predicting {baseline.constant!r} for every example" if baseline.constant is not None else "a constant prediction"
    return (f"Constant-prediction baseline ({what}): {baseline.score:.2f}, dev-set standard error "
            f"{baseline.standard_error:.2f} (n={n}); {NOT_LEARNT} = below {baseline.threshold:.2f}, not learnt "
            "(`tasks/baseline.py`).")


__all__ = ["by_seed", "versus", "format_versus", "learnt_mark", "baseline_of", "pm", "baseline_legend", "signed",
           "NOT_LEARNT"]
