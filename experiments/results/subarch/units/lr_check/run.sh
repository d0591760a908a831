#!/bin/bash
# The fourth search's fine-tuning chose lr 1e-4, the top of its grid (5e-5, 1e-4), for the distilled model on every
# task. Is CoLA's gap a too-small learning rate? The distilled model (the study's models/distilled) fine-tuned on CoLA
# at lr 2e-4, both warm-ups, seed 1, otherwise as the study's sweep (its chosen seed-2 config: 3 epochs, batch 32,
# holdout 0.12), one thread each; compared with the sweep's own seed-1 runs at 5e-5 and 1e-4.
# Usage (from the repository root): GLUE_DIR=../shared/glue bash experiments/results/subarch/units/lr_check/run.sh RUNS DIR
#   RUNS: the fourth study's --output-dir (its models/distilled); DIR: where the runs go.
# Writes experiments/results/subarch/units/lr_check/lr_check.json. A finished run is kept, not redone.
set -euo pipefail
RUNS=${1:?usage: run.sh RUNS DIR}
D=${2:?usage: run.sh RUNS DIR}
R=experiments/results/subarch/units
mkdir -p "$D"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
for wu in 0.06 0.1; do echo "$wu"; done | xargs -P 2 -I{} bash -c '
  run=$2/distilled-cola-lr2e-4-wu$1-seed1
  [ -f "$run/results.json" ] && exit 0
  python train.py --config experiments/results/subarch/units/finetune/distilled/cola/chosen-seed2/config.yaml \
    --model "$3/models/distilled" --seed 1 --lr 2e-4 --warmup-ratio "$1" --num-threads 1 --no-progress \
    --output-dir "$run" > "$2/d-$1.log" 2>&1' _ {} "$D" "$RUNS"
python - "$D" "$R" <<'PY'
import json, sys
from tasks.score import task_score
d, results = sys.argv[1:]
settings = next(r for r in json.load(open(f"{results}/table.json"))["rows"] if r["row"] == "distilled")["tasks"]["cola"]["settings"]
out = {"command": "GLUE_DIR=../shared/glue bash experiments/results/subarch/units/lr_check/run.sh "
                  "/work/study/runs/subarch_units /work/study/lrcheck",
       "protocol": "distilled model, CoLA, seed 1, the study's sweep config with --lr and --warmup-ratio; one seed",
       "runs": []}
for s in settings:  # the sweep's own seed-1 runs
    out["runs"].append({"lr": s["lr"], "warmup": s["warmup"], "dev": s["dev"]["values"][0],
                        "holdout": s["holdout"]["values"][0], "from": "the study's sweep"})
for wu in (0.06, 0.1):
    r = json.load(open(f"{d}/distilled-cola-lr2e-4-wu{wu}-seed1/results.json"))
    m = json.load(open(f"{d}/distilled-cola-lr2e-4-wu{wu}-seed1/metrics.json"))
    out["runs"].append({"lr": 2e-4, "warmup": wu, "dev": task_score(m["cola"]),
                        "holdout": task_score(r["holdout_metrics"]["cola"]), "from": "this check"})
json.dump(out, open(f"{results}/lr_check/lr_check.json", "w"), indent=1)
for r in out["runs"]:
    print(r)
PY
