"""Selection among sub-architectures: the Pareto frontier over (parameters, cost, error), a scalar ranking, a plot.

Every objective is minimised. Candidate ``a`` **dominates** ``b`` when it is no worse on every objective and
better on one; the **frontier** is the set no candidate dominates (:func:`pareto_front`).

The scalar ranking plays the role of Bort's W-coefficient, which ranks candidates by their parameter size,
inference cost and error together. Its exact definition (de Wynter, "An Approximation Algorithm for Optimal
Subarchitecture Extraction", 2020) could not be retrieved here, so this is **our own stand-in**, stated
plainly: each objective is min-max normalised over the candidates to ``x̂ ∈ [0, 1]`` (0 = the best value
of the set) and::

    W(a) = 1 - sqrt( Σ_k w_k · x̂_k(a)² / Σ_k w_k )

the closeness to the *utopia point* (the best parameters, cost and error of the set at once): 1 there,
0 at the nadir. With every weight positive the top-ranked candidate is on the frontier (a candidate that
dominates another is strictly closer to the utopia point), so W only orders the frontier by the trade-off
the weights express (default 1, 1, 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from basics.errors import UserError
from experiments.plots import _save, pyplot


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` no worse than ``b`` everywhere and better somewhere (minimising every objective)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the points no other point dominates."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def normalised(values: Sequence[float]) -> list[float]:
    """Min-max to [0, 1] (0 = smallest); all 0 when every value is the same."""
    low, high = min(values), max(values)
    return [0.0 if high == low else (v - low) / (high - low) for v in values]


def w_scores(points: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """``W`` of every point (module docstring); ``weights`` one per objective, each >= 0, not all 0."""
    if not points:
        return []
    if len(weights) != len(points[0]) or any(w < 0 for w in weights) or not any(weights):
        raise UserError(f"ranking weights must be {len(points[0])} non-negative numbers, not all 0; got {list(weights)}")
    columns = [normalised([p[k] for p in points]) for k in range(len(weights))]
    total = sum(weights)
    return [1 - math.sqrt(sum(w * columns[k][i] ** 2 for k, w in enumerate(weights)) / total) for i in range(len(points))]


def rank(names: Sequence[str], points: Sequence[Sequence[float]], weights: Sequence[float]) -> list[dict]:
    """One record per candidate, best ``W`` first: ``name``, ``w``, ``rank`` (1 = best), ``frontier``."""
    front = set(pareto_front(points))
    scores = w_scores(points, weights)
    order = sorted(range(len(names)), key=lambda i: (-scores[i], names[i]))
    return [{"name": names[i], "w": scores[i], "rank": r + 1, "frontier": i in front} for r, i in enumerate(order)]


def plot_frontier(candidates: Sequence[Mapping], path: Path, cost_label: str, error_label: str,
                  chosen: str | None = None, teacher: Mapping | None = None, cost_scale: float = 1.0) -> None:
    """Two panels, error against parameters and against cost; frontier points filled and joined, the chosen
    candidate circled, the teacher a star. ``candidates``: ``name``, ``params``, ``cost``, ``error``, ``frontier``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "params", "encoder parameters (millions)"), (axes[1], "cost", cost_label)):
        scale = 1e6 if key == "params" else cost_scale
        for c in candidates:
            x = c[key] / scale
            ax.scatter(x, c["error"], s=36, color="tab:blue" if c["frontier"] else "lightgray",
                       edgecolor="tab:blue", zorder=3)
            if c["frontier"] or c["name"] == chosen:
                ax.annotate(c["name"], (x, c["error"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = sorted((c[key] / scale, c["error"]) for c in candidates if c["frontier"])
        if front:
            ax.plot(*zip(*front, strict=True), color="tab:blue", linewidth=1, alpha=0.6, label="Pareto frontier")
        pick = next((c for c in candidates if c["name"] == chosen), None)
        if pick is not None:
            ax.scatter(pick[key] / scale, pick["error"], s=180, facecolors="none", edgecolors="tab:red", linewidths=2,
                       label=f"chosen ({chosen})", zorder=4)
        if teacher is not None and key in teacher:
            ax.scatter(teacher[key] / scale, teacher.get("error", 0.0), marker="*", s=160, color="black",
                       label="teacher", zorder=4)
        ax.set_xlabel(label)
        ax.set_ylabel(error_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Sub-architecture search: error against size and cost")
    _save(fig, path)
