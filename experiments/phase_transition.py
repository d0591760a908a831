"""Phase transition of structured tickets for one task, and its super ticket (resumable).

    python -m experiments.phase_transition --task rte --sparsities 0.1,0.2,...,0.7 --seeds 1,2,3 \
        --output-dir runs/pt-rte [--select-on holdout|dev] [any train.py option: --epochs, --lr, ...]

1. ``dense-seed{S}``: fine-tune the dense model for every seed; the first seed's model is scored
   and cut into winning / random / losing masks at every sparsity.
2. ``{kind}-{sparsity:.2f}-seed{S}``: rewind, that is, train from the pre-trained weights with
   the mask fixed. Winning and losing masks come from the scoring run. The random mask is redrawn
   for every seed, with exactly the winning ticket's counts.
3. ``phase_transition.json`` / ``.md``: mean ± std over seeds of the task score (the mean of the
   task's metrics) on dev and on the held-out slice of train. ``phase_transition.png``: dev score
   vs sparsity for the three kinds, with the dense line and the seed spread.
4. ``super_ticket.safetensors``: the winning ticket at the sparsity with the best mean score on the
   held-out slice of train (``--select-on dev`` to use dev instead).

A run whose ``metrics.json`` exists is skipped, so re-running the command resumes the study.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

from masks.arch import EncoderShape
from masks.importance import load_importance
from masks.mask import load_mask, save_mask
from masks.tickets import cut_ticket
from mtl.cli import config_parser, parse_config, run_main
from mtl.config import TrainConfig
from mtl.errors import UserError
from mtl.io import atomic_write_json, atomic_write_text
from mtl.run import prepare_output_dir, resolve_tasks, run_training

KINDS = ("winning", "random", "losing")
COLORS = {"winning": "tab:green", "random": "tab:blue", "losing": "tab:red"}


def task_score(metrics: dict[str, float]) -> float:
    """One number per task: the mean of its metrics (MRPC acc/F1, STS-B Pearson/Spearman, ...)."""
    return sum(metrics.values()) / len(metrics)


def run_once(config: TrainConfig, tag: str = "phase-transition") -> dict:
    """Train unless ``OUTPUT/metrics.json`` exists (then say so, prefixed ``[tag]``); return ``results.json``."""
    out = Path(config.output_dir)
    if (out / "metrics.json").is_file():
        print(f"[{tag}] skip {out.name}: finished", flush=True)
    else:  # unfinished: continue from its checkpoint if it has one
        run_training(dataclasses.replace(config, resume=(out / "checkpoint.pt").is_file()))
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def scores_of(results: dict, task: str) -> dict[str, float | None]:
    holdout = results.get("holdout_metrics") or {}
    return {"dev": task_score(results["metrics"][task]),
            "holdout": task_score(holdout[task]) if task in holdout else None,
            "dev_metrics": results["metrics"][task]}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_study(base: TrainConfig, task: str, seeds: list[int], out: Path, select_on: str,
              control_sparsities: list[float] | None = None) -> dict:
    """Dense runs, then every ticket kind at every sparsity; random and losing tickets only at
    ``control_sparsities`` when given (winning tickets run at every sparsity)."""
    runs: dict[str, list[dict]] = {}
    first = seeds[0]
    for seed in seeds:
        cfg = dataclasses.replace(base, seed=seed, output_dir=str(out / f"dense-seed{seed}"), mask=None,
                                  score_importance=seed == first, save_model=False)
        print(f"[phase-transition] dense seed {seed}", flush=True)
        runs.setdefault("dense", []).append({"seed": seed, **scores_of(run_once(cfg), task)})
    scoring_dir = out / f"dense-seed{first}"
    imp = load_importance(scoring_dir / "importance.safetensors")
    for sparsity in base.sparsities:
        for kind in base.ticket_kinds:
            if kind != "winning" and control_sparsities is not None and \
                    not any(abs(sparsity - c) < 1e-9 for c in control_sparsities):
                continue
            for seed in seeds:
                name = f"{kind}-{sparsity:.2f}"
                mask_path = scoring_dir / "masks" / f"{name}.safetensors"
                if kind == "random":  # a fresh random draw per seed, same counts as winning
                    mask_path = out / "masks" / f"random-{sparsity:.2f}-seed{seed}.safetensors"
                    if not mask_path.is_file():
                        template = load_mask(scoring_dir / "masks" / f"winning-{sparsity:.2f}.safetensors")
                        shape = EncoderShape.parse(template.meta["shape"])
                        save_mask(cut_ticket(imp, "random", sparsity, shape=shape, seed=seed,
                                             ffn_sparsity=float(template.meta.get("ffn_sparsity", sparsity)),
                                             min_heads_per_layer=base.min_heads_per_layer,
                                             granularity=base.ticket_granularity), mask_path)
                cfg = dataclasses.replace(base, seed=seed, output_dir=str(out / f"{name}-seed{seed}"),
                                          mask=str(mask_path), score_importance=False, save_model=False)
                print(f"[phase-transition] {name} seed {seed}", flush=True)
                runs.setdefault(name, []).append({"seed": seed, "sparsity": sparsity, **scores_of(run_once(cfg), task)})
    return summarize(runs, base, task, out, select_on, scoring_dir)


def summarize(runs: dict[str, list[dict]], base: TrainConfig, task: str, out: Path, select_on: str,
              scoring_dir: Path) -> dict:
    rows = []
    for name, items in runs.items():
        kind, sparsity = ("dense", 0.0) if name == "dense" else (name.rsplit("-", 1)[0], float(name.rsplit("-", 1)[1]))
        dev_mean, dev_std = mean_std([r["dev"] for r in items])
        hold = [r["holdout"] for r in items if r["holdout"] is not None]
        hold_mean, hold_std = mean_std(hold) if hold else (None, None)
        rows.append({"kind": kind, "sparsity": sparsity, "seeds": [r["seed"] for r in items],
                     "dev_mean": dev_mean, "dev_std": dev_std, "holdout_mean": hold_mean, "holdout_std": hold_std,
                     "dev": [r["dev"] for r in items], "dev_metrics": [r["dev_metrics"] for r in items]})
    key = "holdout_mean" if select_on == "holdout" else "dev_mean"
    winning = [r for r in rows if r["kind"] == "winning"]
    if any(r[key] is None for r in winning):
        raise UserError("--select-on holdout needs --holdout-fraction > 0")
    best = max(winning, key=lambda r: (r[key], r["sparsity"]))
    super_mask = load_mask(scoring_dir / "masks" / f"winning-{best['sparsity']:.2f}.safetensors")
    super_mask.meta.update({"kind": "super_ticket", "selected_on": select_on, "selected_score": f"{best[key]:.3f}",
                            "source_kind": "winning"})
    save_mask(super_mask, out / "super_ticket.safetensors")
    dense = next(r for r in rows if r["kind"] == "dense")
    report = {"task": task, "select_on": select_on, "seeds": dense["seeds"], "rows": rows,
              "super_ticket": {"sparsity": best["sparsity"], "score": best[key], "dev_mean": best["dev_mean"],
                               "dev_std": best["dev_std"], "param_sparsity": float(super_mask.meta["param_sparsity"]),
                               "path": str(out / "super_ticket.safetensors")},
              "dense": {"dev_mean": dense["dev_mean"], "dev_std": dense["dev_std"]},
              "config": dataclasses.asdict(base), "command": " ".join(sys.argv)}
    atomic_write_json(out / "phase_transition.json", report)
    atomic_write_text(out / "phase_transition.md", markdown(report))
    plot(report, out / "phase_transition.png")
    return report


def markdown(report: dict) -> str:
    rows = report["rows"]
    sparsities = sorted({r["sparsity"] for r in rows if r["kind"] != "dense"})
    by = {(r["kind"], r["sparsity"]): r for r in rows}
    dense = by[("dense", 0.0)]
    lines = [f"# Phase transition: {report['task']} (dev score, mean ± std over seeds {report['seeds']})", "",
             f"Task score = mean of the task's dev metrics. Dense: **{dense['dev_mean']:.2f} ± {dense['dev_std']:.2f}**.",
             f"Super ticket: winning at sparsity {report['super_ticket']['sparsity']:.2f} "
             f"(selected on {report['select_on']}; parameter sparsity {report['super_ticket']['param_sparsity']:.3f}), "
             f"dev {report['super_ticket']['dev_mean']:.2f} ± {report['super_ticket']['dev_std']:.2f}.", "",
             "| sparsity | winning | random | losing | winning (held-out) |", "|---|---|---|---|---|"]
    for s in sparsities:
        cells = []
        for kind in KINDS:
            r = by.get((kind, s))
            cells.append(f"{r['dev_mean']:.2f} ± {r['dev_std']:.2f}" if r else "")
        w = by.get(("winning", s))
        cells.append(f"{w['holdout_mean']:.2f} ± {w['holdout_std']:.2f}" if w and w["holdout_mean"] is not None else "")
        lines.append(f"| {s:.2f} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.plots import dense_band, finish_curves, line_with_band

    fig, ax = plt.subplots(figsize=(6, 4))
    dense = next(r for r in report["rows"] if r["kind"] == "dense")
    dense_band(ax, dense["dev_mean"], dense["dev_std"])
    for kind in KINDS:
        pts = [(r["sparsity"], r["dev_mean"], r["dev_std"]) for r in report["rows"] if r["kind"] == kind]
        if pts:
            line_with_band(ax, pts, COLORS[kind], kind)
    st = report["super_ticket"]
    ax.scatter([st["sparsity"]], [st["dev_mean"]], marker="*", s=200, color="gold", edgecolor="black", zorder=5,
               label="super ticket")
    finish_curves(fig, ax, path, "sparsity (fraction of heads and FFN neurons pruned)", f"{report['task']} dev score",
                  f"Phase transition: {report['task']} (seeds {','.join(map(str, report['seeds']))})")


def main(argv: list[str] | None = None) -> int:
    def go() -> None:
        parser = config_parser("python -m experiments.phase_transition", __doc__.splitlines()[0], TrainConfig)
        parser.add_argument("--task", required=True, help="the task (one)")
        parser.add_argument("--seeds", default="1,2", help="comma-separated seeds")
        parser.add_argument("--select-on", default="holdout", choices=("holdout", "dev"),
                            help="choose the super ticket's sparsity on a held-out slice of train, or on dev")
        parser.add_argument("--control-sparsities", default=None,
                            help="sparsities at which random and losing tickets run (default: every sparsity)")
        config, args = parse_config(parser, TrainConfig, argv)
        if "," in args.task:
            raise UserError("--task takes one task; run one study per task")
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not seeds:
            raise UserError("--seeds needs at least one seed")
        holdout = config.holdout_fraction or (0.1 if args.select_on == "holdout" else 0.0)
        config = dataclasses.replace(config, tasks=[args.task], holdout_fraction=holdout)
        _, (task,) = resolve_tasks(config)
        out = prepare_output_dir(config.output_dir)
        controls = None
        if args.control_sparsities is not None:
            controls = [float(s) for s in args.control_sparsities.split(",") if s.strip()]
            unknown = [c for c in controls if not any(abs(c - s) < 1e-9 for s in config.sparsities)]
            if unknown:
                raise UserError(f"--control-sparsities {unknown} are not among --sparsities {config.sparsities}")
        report = run_study(config, task.name, seeds, out, args.select_on, controls)
        print(markdown(report))

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
