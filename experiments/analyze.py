"""Analyse ticket masks across tasks and seeds: heatmaps, overlap, agreement, stable masks.

    python -m experiments.analyze RUN_DIR_OR_MASK... --out DIR

Masks found (True = keep; heads ``[L, H]``, FFN neurons ``[L, I]``):
- in a folder, recursively: ``super_ticket.safetensors`` (``experiments.phase_transition``, also inside an
  ``experiments.run`` study) and ``masks/good-seed*.safetensors`` (``experiments.iterative_pruning``, one per
  prune seed);
- any mask file given directly (a per-task file gives one mask per task).

They are grouped by task (mask metadata ``tasks``) and seed (metadata ``seed``, else ``seed<N>`` in the file
or folder name). When one task has masks of several sources (super ticket and iterative), each source is its
own group, ``task:source``. Written to DIR:
- ``heatmaps/GROUP-seedS.png``: heads kept (layers x heads) and FFN neurons kept per layer, per mask;
- ``stable/GROUP.safetensors`` (+ ``heatmaps/GROUP-stable.png``): units kept by every seed of the group;
- ``overlap.png``: group x group Jaccard of the stable masks;
- ``analysis.json`` / ``analysis.md``: per group, across-seed mean pairwise Jaccard and Fleiss' kappa (heads,
  FFN, all), the stable mask's counts; the group x group Jaccard of stable masks and the mean Jaccard over
  all mask pairs (diagonal: across seeds within the group).
"""

from __future__ import annotations

import itertools
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from experiments.plots import plot_mask, plot_overlap
from masks.agreement import agreement, jaccard, stable_mask
from masks.mask import Mask, load_mask_file, save_mask

FOLDER_PATTERNS = ("super_ticket.safetensors", "good-seed*.safetensors")
_SEED_RE = re.compile(r"seed(\d+)")


@dataclass
class FoundMask:
    """One mask and where it came from."""

    path: Path
    mask: Mask
    task: str
    seed: str  # "?" when unknown
    source: str  # "super_ticket", "iterative", or the file's kind
    group: str = ""  # task, or task:source (set by group_masks)


def _seed_of(mask: Mask, path: Path) -> str:
    if mask.meta.seed is not None:
        return str(mask.meta.seed)
    for part in (path.name, *(p.name for p in path.parents)):
        found = _SEED_RE.search(part)
        if found:
            return found.group(1)
    return "?"


def _source_of(mask: Mask, path: Path) -> str:
    if path.name == "super_ticket.safetensors" or mask.meta.kind == "super_ticket":
        return "super_ticket"
    if mask.meta.extra.get("method") == "iterative":
        return "iterative"
    return mask.meta.kind or "mask"


def _from_file(path: Path) -> list[FoundMask]:
    loaded = load_mask_file(path)
    masks = loaded.items() if isinstance(loaded, dict) else [(",".join(loaded.meta.tasks) or path.parent.name, loaded)]
    return [FoundMask(path, m, task, _seed_of(m, path), _source_of(m, path)) for task, m in masks]


def find_masks(paths: Sequence[Path]) -> list[FoundMask]:
    """Every mask in ``paths`` (folders searched recursively for :data:`FOLDER_PATTERNS`, files taken as masks)."""
    found: list[FoundMask] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"not found: {path}")
        if path.is_file():
            if path.suffix != ".safetensors":
                raise UserError(f"{path} is not a mask file (.safetensors)")
            files = [path]
        else:
            files = sorted({f for pattern in FOLDER_PATTERNS for f in path.rglob(pattern)})
        for file in files:
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            items = _from_file(file)
            if file != path and file.name.startswith("good-seed"):  # found in a folder: iterative masks only
                items = [i for i in items if i.source == "iterative"]
            found += items
    return found


def group_masks(found: list[FoundMask]) -> dict[str, list[FoundMask]]:
    """``{group: masks sorted by seed}``; group = task, or task:source when a task has several sources.
    UserError when one group has two masks of the same seed."""
    sources: dict[str, set[str]] = {}
    for f in found:
        sources.setdefault(f.task, set()).add(f.source)
    groups: dict[str, list[FoundMask]] = {}
    for f in found:
        f.group = f.task if len(sources[f.task]) == 1 else f"{f.task}:{f.source}"
        for other in groups.get(f.group, []):
            if other.seed == f.seed:
                raise UserError(f"two masks for {f.group} seed {f.seed}: {other.path} and {f.path}; pass only one of them")
        groups.setdefault(f.group, []).append(f)
    return {g: sorted(items, key=_seed_key) for g, items in sorted(groups.items())}


def _seed_key(f: FoundMask) -> tuple[int, int, str]:
    """Numeric seeds first, in order; then the others by name."""
    return (0, int(f.seed), "") if f.seed.isdigit() else (1, 0, f.seed)


# --------------------------------------------------------------------------- numbers

def mask_summary(mask: Mask) -> dict:
    """Counts of a mask: heads and FFN neurons kept (in total and per layer), params kept (%) when the shape is known."""
    out = {"heads_kept": mask.num_heads_kept, "heads_total": mask.heads.numel(), "ffn_kept": mask.num_ffn_kept,
           "ffn_total": mask.ffn.numel(), "heads_per_layer": mask.heads.sum(1).tolist(),
           "ffn_per_layer": mask.ffn.sum(1).tolist()}
    if mask.meta.shape is not None:
        out["params_kept"] = round(100 * (1 - mask.sparsity(mask.meta.shape)), 2)
    return out


def _same_shape(a: Mask, b: Mask) -> bool:
    return a.heads.shape == b.heads.shape and a.ffn.shape == b.ffn.shape


def overlap_tables(groups: dict[str, list[FoundMask]], stable: dict[str, Mask]) -> dict[str, dict]:
    """Group x group Jaccard (all units): of the stable masks, and the mean over all mask pairs (one mask of each
    group; the diagonal pairs different seeds of one group, None with one seed). None for different shapes."""
    names = list(groups)
    of_stable: dict[str, dict[str, float | None]] = {a: {} for a in names}
    mean_pairs: dict[str, dict[str, float | None]] = {a: {} for a in names}
    for a, b in itertools.product(names, names):
        if not _same_shape(stable[a], stable[b]):
            of_stable[a][b] = mean_pairs[a][b] = None
            continue
        of_stable[a][b] = jaccard(stable[a], stable[b])
        if a == b:
            pairs = list(itertools.combinations([f.mask for f in groups[a]], 2))
        else:
            pairs = [(x.mask, y.mask) for x in groups[a] for y in groups[b]]
        mean_pairs[a][b] = sum(jaccard(x, y) for x, y in pairs) / len(pairs) if pairs else None
    return {"stable": of_stable, "mean_pairwise": mean_pairs}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# --------------------------------------------------------------------------- the analysis

def analyze(paths: Sequence[Path], out: Path, command: str = "") -> dict:
    """Find, group and analyse the masks in ``paths``; write every output under ``out``; return the report."""
    found = find_masks(paths)
    if not found:
        raise UserError(f"no masks found in {', '.join(map(str, paths))}: expected super_ticket.safetensors "
                        "(phase_transition), masks/good-seed*.safetensors (iterative_pruning) or mask files")
    groups = group_masks(found)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"inputs": [str(p) for p in paths], "groups": {}, "command": command}
    stable: dict[str, Mask] = {}
    for name, items in groups.items():
        masks = [f.mask for f in items]
        shapes = {(tuple(m.heads.shape), tuple(m.ffn.shape)) for m in masks}
        if len(shapes) != 1:
            raise UserError(f"the masks of {name} have different shapes ({', '.join(str(f.path) for f in items)})")
        for f in items:
            plot_mask(f.mask, out / "heatmaps" / f"{_safe(name)}-seed{_safe(f.seed)}.png", f"{name}, seed {f.seed}")
        stable[name] = stable_mask(masks)
        stable[name].meta.tasks = (items[0].task,)
        stable_path = out / "stable" / f"{_safe(name)}.safetensors"
        save_mask(stable[name], stable_path)
        plot_mask(stable[name], out / "heatmaps" / f"{_safe(name)}-stable.png",
                  f"{name}: kept by all {len(items)} seed(s)")
        report["groups"][name] = {
            "task": items[0].task, "source": items[0].source, "seeds": [f.seed for f in items],
            "masks": [{"seed": f.seed, "path": str(f.path), **mask_summary(f.mask)} for f in items],
            "agreement": agreement(masks),
            "stable": {"path": str(stable_path), **mask_summary(stable[name])}}
    report["overlap"] = overlap_tables(groups, stable)
    if len(stable) > 1 and len({(tuple(m.heads.shape), tuple(m.ffn.shape)) for m in stable.values()}) == 1:
        plot_overlap(stable, out / "overlap.png", "Jaccard overlap of the stable masks (heads + FFN neurons)")
        report["overlap_png"] = str(out / "overlap.png")
    atomic_write_json(out / "analysis.json", report)
    atomic_write_text(out / "analysis.md", markdown(report))
    return report


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown(report: dict) -> str:
    header = ["group", "seeds", "Jaccard heads", "Jaccard FFN", "Jaccard all", "kappa heads", "kappa FFN", "kappa all",
              "stable heads", "stable FFN", "stable params kept %"]
    lines = ["# Mask analysis", "",
             ("Polarity: kept units. Jaccard = |A ∩ B| / |A ∪ B|; Fleiss' kappa over units (subjects) rated kept / "
              "pruned by each seed's mask (1 = perfect agreement, 0 = chance)."), "",
             "## Across seeds, per group", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, g in report["groups"].items():
        a, s = g["agreement"], g["stable"]
        params = f"{s['params_kept']:.1f}" if "params_kept" in s else "–"
        cells = [name, ",".join(g["seeds"]), *(_num(a[part][stat]) for stat in ("jaccard", "kappa")
                                               for part in ("heads", "ffn", "all")),
                 f"{s['heads_kept']}/{s['heads_total']}", f"{s['ffn_kept']}/{s['ffn_total']}", params]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Stable masks per layer (heads kept / FFN neurons kept)", ""]
    for name, g in report["groups"].items():
        s = g["stable"]
        per_layer = ", ".join(f"L{i}: {h}/{f}" for i, (h, f) in enumerate(zip(s["heads_per_layer"], s["ffn_per_layer"], strict=True)))
        lines.append(f"- {name}: {per_layer}")
    names = list(report["groups"])
    for key, title in (("stable", "Group x group Jaccard of the stable masks"),
                       ("mean_pairwise", "Group x group mean Jaccard over all mask pairs (diagonal: across seeds)")):
        table = report["overlap"][key]
        lines += ["", f"## {title}", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {a} | " + " | ".join(_num(table[a][b]) for b in names) + " |" for a in names]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="python -m experiments.analyze", description=__doc__.splitlines()[0])
        parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_DIR_OR_MASK",
                            help="phase_transition / iterative_pruning / study folders, or mask files")
        parser.add_argument("--out", type=Path, required=True, help="folder for every output")
        args_in = sys.argv[1:] if argv is None else list(argv)
        args = parser.parse_args(args_in)
        if args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out {args.out} is a file, not a folder")
        report = analyze(args.paths, args.out, "python -m experiments.analyze " + " ".join(map(shlex.quote, args_in)))
        print(markdown(report))
        print(f"wrote {args.out / 'analysis.json'}, {args.out / 'analysis.md'} and the plots in {args.out}")

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
