"""Pictures of tickets (matplotlib PNG): what a mask keeps, how task tickets overlap, phase transitions.

    python -m experiments.plots mask FILE --out mask.png               # one mask or a per-task file
    python -m experiments.plots overlap rte=DIR mrpc=DIR ... --out overlap.png
    python -m experiments.plots phase runs/pt-rte/phase_transition.json --out phase.png

Masks are True = keep: heads ``[L, H]``, FFN neurons ``[L, I]``. A ``TASK=PATH`` item takes a mask
file or a folder holding ``super_ticket.safetensors`` (as ``construct_mtl_mask.py`` does).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write
from masks.aggregate import overlap_table
from masks.construct import load_ticket, parse_tickets, ticket_file
from masks.mask import Mask, load_mask_file

KIND_COLORS = {"winning": "tab:green", "random": "tab:blue", "losing": "tab:red"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    pyplot().close(fig)


def dense_band(ax, mean: float, std: float) -> None:
    """The dense reference: a dashed line at ``mean`` and a grey band of ± ``std`` (over seeds)."""
    ax.axhline(mean, color="black", linestyle="--", label="dense")
    ax.axhspan(mean - std, mean + std, color="gray", alpha=0.15)


def line_with_band(ax, points: Sequence[tuple[float, float, float]], color: str, label: str,
                   linestyle: str = "-") -> None:
    """One curve of ``(x, mean, std)`` points (sorted by x here), with a shaded ± std band."""
    xs, ys, ss = zip(*sorted(points), strict=True)
    ax.plot(xs, ys, marker="o", linestyle=linestyle, color=color, label=label)
    ax.fill_between(xs, [y - s for y, s in zip(ys, ss, strict=True)], [y + s for y, s in zip(ys, ss, strict=True)], color=color, alpha=0.15)


def finish_curves(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Label, legend and grid a score-vs-sparsity plot, then write it to ``path`` (PNG, atomic)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _kept_text(mask: Mask) -> str:
    shape = mask.meta.shape
    params = f", params kept {100 * (1 - mask.sparsity(shape)):.1f}%" if shape is not None else ""
    return (f"heads {mask.num_heads_kept}/{mask.heads.numel()}, "
            f"FFN neurons {mask.num_ffn_kept}/{mask.ffn.numel()}{params}")


def plot_mask(mask: Mask | dict[str, Mask], path: Path, title: str | None = None) -> None:
    """Left: heads kept, layers x heads (for a per-task dict: how many tasks keep each head).
    Right: share of FFN neurons kept per layer (one bar per task for a per-task dict)."""
    masks = mask if isinstance(mask, dict) else {",".join(mask.meta.tasks) or "mask": mask}
    first = next(iter(masks.values()))
    layers, heads = first.heads.shape
    counts = torch.stack([m.heads for m in masks.values()]).sum(0)  # [L, H] tasks keeping each head
    plt = pyplot()
    fig, (ax_h, ax_f) = plt.subplots(1, 2, figsize=(10, 0.45 * layers + 2.2),
                                     gridspec_kw={"width_ratios": [max(heads, 4), 6]})
    image = ax_h.imshow(counts.numpy(), cmap="Greens", vmin=0, vmax=len(masks), aspect="auto")
    ax_h.set_xticks(range(heads))
    ax_h.set_yticks(range(layers))
    ax_h.set_xlabel("head")
    ax_h.set_ylabel("layer")
    if len(masks) > 1:
        fig.colorbar(image, ax=ax_h, label="tasks keeping the head", ticks=range(len(masks) + 1))
        ax_h.set_title("heads kept (number of tasks)")
    else:
        ax_h.set_title(f"heads kept (green), {first.num_heads_kept}/{first.heads.numel()}")
    width = 0.8 / len(masks)
    for i, (task, m) in enumerate(masks.items()):
        share = m.ffn.float().mean(1).numpy() * 100  # [L] % of neurons kept
        ax_f.barh([layer + (i - (len(masks) - 1) / 2) * width for layer in range(layers)], share, height=width,
                  label=task)
    ax_f.set_ylim(layers - 0.5, -0.5)  # layer 0 on top, as in the heatmap
    ax_f.set_yticks(range(layers))
    ax_f.set_xlim(0, 100)
    ax_f.set_xlabel(f"FFN neurons kept (% of {first.ffn.shape[1]})")
    ax_f.set_title("FFN neurons kept per layer")
    if len(masks) > 1:
        ax_f.legend(fontsize=7, loc="lower right")
    ax_f.grid(axis="x", alpha=0.3)
    union = first
    for m in masks.values():
        union = union | m
    subtitle = _kept_text(first) if len(masks) == 1 else f"{len(masks)} task masks, their union keeps {_kept_text(union)}"
    fig.suptitle(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    _save(fig, path)


def plot_overlap(masks: dict[str, Mask], path: Path, title: str | None = None) -> None:
    """Task x task Jaccard overlap of kept units (heads and FFN neurons pooled), annotated."""
    table = overlap_table(masks)
    tasks = list(masks)
    values = [[table[a, b] for b in tasks] for a in tasks]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2.5, 1.0 * len(tasks) + 1.8))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(tasks)), tasks)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=9)
    fig.colorbar(image, ax=ax, label="Jaccard overlap")
    ax.set_title(title or "Super-ticket overlap (heads + FFN neurons)", fontsize=10)
    _save(fig, path)


def plot_phase_transition(report: dict | Path, path: Path) -> None:
    """Dev score vs sparsity per ticket kind, the dense band and the super ticket, from a phase-transition
    report (``experiments.phase_transition``) or its JSON file."""
    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text(encoding="utf-8"))
    fig, ax = pyplot().subplots(figsize=(6, 4))
    dense = next(r for r in report["rows"] if r["kind"] == "dense")
    dense_band(ax, dense["dev_mean"], dense["dev_std"])
    for kind, color in KIND_COLORS.items():
        pts = [(r["sparsity"], r["dev_mean"], r["dev_std"]) for r in report["rows"] if r["kind"] == kind]
        if pts:
            line_with_band(ax, pts, color, kind)
    st = report["super_ticket"]
    ax.scatter([st["sparsity"]], [st["dev_mean"]], marker="*", s=200, color="gold", edgecolor="black", zorder=5,
               label="super ticket")
    finish_curves(fig, ax, Path(path), "sparsity (fraction of heads and FFN neurons pruned)",
                  f"{report['task']} dev score",
                  f"Phase transition: {report['task']} (seeds {','.join(map(str, report['seeds']))})")


def load_tickets(items: Sequence[str]) -> dict[str, Mask]:
    """``["rte=DIR_OR_FILE", ...]`` -> ``{task: Mask}`` (single-task masks only)."""
    return {task: load_ticket(task, ticket_file(path)) for task, path in parse_tickets(list(items)).items()}


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="python -m experiments.plots", description=__doc__.splitlines()[0])
        sub = parser.add_subparsers(dest="what", required=True, parser_class=OneLineParser)
        p_mask = sub.add_parser("mask", help="heads kept (layers x heads) and FFN neurons kept per layer")
        p_mask.add_argument("file", type=Path)
        p_overlap = sub.add_parser("overlap", help="task x task Jaccard overlap of super tickets")
        p_overlap.add_argument("tickets", nargs="+", metavar="TASK=PATH")
        p_phase = sub.add_parser("phase", help="phase transition from phase_transition.json")
        p_phase.add_argument("file", type=Path)
        for p in (p_mask, p_overlap, p_phase):
            p.add_argument("--out", type=Path, required=True, help="PNG file to write")
        for p in (p_mask, p_overlap):
            p.add_argument("--title", default=None, help="a title above the picture")
        args = parser.parse_args(argv)
        if args.what == "mask":
            plot_mask(load_mask_file(args.file), args.out, args.title or args.file.name)
        elif args.what == "overlap":
            plot_overlap(load_tickets(args.tickets), args.out, args.title)
        else:
            if not args.file.is_file():
                raise UserError(f"phase-transition report not found: {args.file}")
            plot_phase_transition(args.file, args.out)
        print(f"wrote {args.out}")

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
