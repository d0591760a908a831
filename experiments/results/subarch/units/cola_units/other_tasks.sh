#!/bin/bash
# What does ranking the fourth search's units by CoLA's importance cost the other four tasks? The "cola" model of
# run.sh (D6-A4-H384-I768, bare extraction, heads and FFN neurons ranked by CoLA's own importance) fine-tuned on RTE,
# MRPC, STS-B and SST-2 as the study fine-tunes the extracted row: each task's chosen seed-2 config of the extracted
# row (its lr and warm-up: no sweep of its own), seeds 1-3, one thread each. Compared, paired by seed, with the study's
# extracted row (the sum ranking), task by task and on the five-task average (CoLA from cola_units.json).
# Usage (from the repository root, after run.sh):
#   GLUE_DIR=../shared/glue bash experiments/results/subarch/units/cola_units/other_tasks.sh RUNS
#   RUNS: the fourth study's --output-dir (run.sh's models under RUNS/cola_units/models).
# Writes experiments/results/subarch/units/cola_units/other_tasks.json. A finished run is kept, not redone.
set -euo pipefail
RUNS=${1:?usage: other_tasks.sh RUNS}
R=experiments/results/subarch/units
D=$RUNS/cola_units
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
for job in sst2:1 sst2:2 sst2:3 stsb:1 stsb:2 stsb:3 mrpc:1 mrpc:2 mrpc:3 rte:1 rte:2 rte:3; do echo "$job"; done |
  xargs -P 2 -I{} bash -c '
  task=${1%%:*}; seed=${1#*:}; d=$2; run=$d/runs/cola-$task-seed$seed
  [ -f "$run/results.json" ] && exit 0
  python train.py --config "$3/finetune/extracted/$task/chosen-seed2/config.yaml" --model "$d/models/cola" \
    --seed "$seed" --num-threads 1 --no-progress --output-dir "$run" > "$d/cola-$task-seed$seed.log" 2>&1' _ {} "$D" "$R"
python - "$D" "$R" <<'PY'
import json, sys
from basics.stats import mean_std, paired_difference
from tasks.score import task_score
d, results = sys.argv[1:]
cola = json.load(open(f"{results}/cola_units/cola_units.json"))["rankings"]
def score(run, task):
    return task_score(json.load(open(f"{run}/metrics.json"))[task])
extracted = next(r for r in json.load(open(f"{results}/table.json"))["rows"] if r["row"] == "extracted")["tasks"]
def summary(runs):
    mean, std = mean_std(list(runs.values()))
    return {"runs": runs, "mean": mean, "std": std}
tasks = {}
for task in ("sst2", "cola", "stsb", "mrpc", "rte"):
    chosen = extracted[task]["chosen"]  # the study's extracted row, per seed
    if task == "cola":
        mine = {int(s): v for s, v in cola["cola"]["runs"].items()}
    else:
        mine = {s: score(f"{d}/runs/cola-{task}-seed{s}", task) for s in (1, 2, 3)}
    by = {"sum": dict(zip(chosen["seeds"], chosen["dev"]["values"])), "cola": mine}
    tasks[task] = {name: summary(runs) for name, runs in by.items()}
    tasks[task]["cola_minus_sum"] = paired_difference(by["cola"], by["sum"]).to_dict()
average = {name: {s: sum(tasks[t][name]["runs"][s] for t in tasks) / len(tasks) for s in (1, 2, 3)}
           for name in ("sum", "cola")}
out = {"protocol": "train.py --config experiments/results/subarch/units/finetune/extracted/TASK/chosen-seed2/config.yaml "
                   "--model RUNS/cola_units/models/cola --seed SEED --num-threads 1",
       "command": "GLUE_DIR=../shared/glue bash experiments/results/subarch/units/cola_units/other_tasks.sh "
                  "/work/study/runs/subarch_units",
       "tasks": tasks,
       "average": {**{name: summary(v) for name, v in average.items()},
                   "cola_minus_sum": paired_difference(average["cola"], average["sum"]).to_dict()}}
json.dump(out, open(f"{results}/cola_units/other_tasks.json", "w"), indent=1)
print(json.dumps({t: round(v["cola_minus_sum"]["mean"], 2) for t, v in tasks.items()}),
      round(out["average"]["cola_minus_sum"]["mean"], 2), out["average"]["cola_minus_sum"]["low"],
      out["average"]["cola_minus_sum"]["high"])
PY
