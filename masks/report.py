"""What a set of masks keeps, as numbers (for JSON) and as the tables ``construct_mtl_mask.py`` prints.

Masks are True = keep. Counts are over the prunable encoder units: heads ``[L, H]`` and FFN
neurons ``[L, I]``; parameter counts follow :meth:`masks.mask.Mask.param_counts`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from masks.aggregate import overlap_table
from masks.arch import EncoderShape
from masks.mask import Mask


@dataclass(frozen=True)
class MaskStats:
    """Kept / total heads, FFN neurons and prunable parameters of one mask."""

    heads_kept: int
    heads_total: int
    ffn_kept: int
    ffn_total: int
    params_kept: int
    params_total: int

    @classmethod
    def of(cls, mask: Mask, shape: EncoderShape) -> "MaskStats":
        kept, total = mask.param_counts(shape)
        return cls(mask.num_heads_kept, mask.heads.numel(), mask.num_ffn_kept, mask.ffn.numel(), kept, total)

    @property
    def param_sparsity(self) -> float:
        """Fraction of prunable parameters removed: ``1 - kept/total``."""
        return 1.0 - self.params_kept / self.params_total

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "param_sparsity": round(self.param_sparsity, 6)}


def overlap_matrix(masks: dict[str, Mask]) -> dict[str, dict[str, float]]:
    """``{a: {b: jaccard}}``: Jaccard overlap of kept units (heads and neurons pooled), diagonal included."""
    table = overlap_table(masks)
    return {a: {b: round(table[a, b], 6) for b in masks} for a in masks}


def build_report(
    tickets: dict[str, Mask],
    result: Mask,
    *,
    mode: str,
    shape: EncoderShape,
    model: str,
    sources: dict[str, str],
    out: str,
) -> dict[str, Any]:
    """The numbers of one construction, JSON-ready.

    ``result`` is the merged mask; for ``per-task`` pass the union of the task masks (the
    units the shared encoder still needs).
    """
    return {
        "mode": mode,
        "out": out,
        "model": model,
        "shape": shape.describe(),
        "tasks": {
            task: {"source": sources[task], **MaskStats.of(mask, shape).as_dict()} for task, mask in tickets.items()
        },
        "result": MaskStats.of(result, shape).as_dict(),
        "overlap": overlap_matrix(tickets),
    }


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%"


def _kept(stats: dict[str, Any], unit: str) -> str:
    return f"{stats[unit + '_kept']}/{stats[unit + '_total']} ({_pct(stats[unit + '_kept'], stats[unit + '_total'])})"


def _align(rows: list[list[str]]) -> str:
    """Rows of cells as text columns: first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_stats_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """One line per ``(name, stats)``: heads kept, FFN neurons kept, parameter sparsity.

    ``stats`` as from :meth:`MaskStats.as_dict`.
    """
    header = ["", "heads kept", "FFN neurons kept", "param sparsity"]
    body = [[name, _kept(s, "heads"), _kept(s, "ffn"), f"{100 * s['param_sparsity']:.1f}%"] for name, s in rows]
    return _align([header, *body])


def format_overlap_table(overlap: dict[str, dict[str, float]]) -> str:
    """Task x task Jaccard table (``overlap`` from :func:`overlap_matrix`), three decimals."""
    tasks = list(overlap)
    rows = [["", *tasks]] + [[a, *(f"{overlap[a][b]:.3f}" for b in tasks)] for a in tasks]
    return _align(rows)


def format_report(report: dict[str, Any]) -> str:
    """The printed summary of :func:`build_report`'s numbers."""
    mode = report["mode"]
    result_name = "union" if mode == "per-task" else mode
    result = report["result"]
    lines = [
        f"{len(report['tasks'])} tickets, model {report['model']} ({report['shape']}), mode {mode}",
        "",
        format_stats_table([*report["tasks"].items(), (result_name, result)]),
        "",
        f"encoder prunable parameters kept: {_pct(result['params_kept'], result['params_total'])}"
        f" ({result['params_kept']}/{result['params_total']})",
        *(["per-task: each task's batches are gated by its own mask; the encoder keeps their union"]
          if mode == "per-task" else []),
        "",
        "Jaccard overlap of kept heads + FFN neurons:",
        format_overlap_table(report["overlap"]),
        "",
        f"wrote {report['out']}",
    ]
    return "\n".join(lines)
