#!/bin/bash
# Is CoLA's gap in the fourth search's extraction (D6-A4-H384-I768, units ranked by the five tasks' importance, each
# task's divided by its sum, summed: experiments/results/subarch/units/) a matter of which units the sum keeps?
# The same shape extracted with two other rankings of its heads and FFN neurons, layers and hidden dimensions
# unchanged (output sensitivity, units/scores.safetensors):
#   cola: CoLA's own importance only;  max: each unit's largest normalised importance over the five tasks.
# Each is fine-tuned on CoLA as the study fine-tunes the extracted row (not distilled): the chosen seed-2 run's config
# (lr 1e-4, warm-up 0.06, 3 epochs, batch 32, holdout 0.12), seeds 1-3, one thread each.
# Usage (from the repository root): GLUE_DIR=../shared/glue bash experiments/results/subarch/units/cola_units/run.sh RUNS
#   RUNS: the fourth study's --output-dir (its models/extracted, to check the summed ranking reproduces it).
# Writes experiments/results/subarch/units/cola_units/cola_units.json. A finished run is kept, not redone.
set -euo pipefail
RUNS=${1:?usage: run.sh RUNS}
R=experiments/results/subarch/units
D=$RUNS/cola_units
mkdir -p "$D"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
python - "$RUNS" "$D" "$R" <<'PY'
import sys
import torch
import yaml
from masks.importance import load_importance
from masks.subarch import SubArch, select
from masks.subarch_importance import SubarchScores, load_scores, with_task_units
from mtl.teacher import load_teacher, make_student, read_student_info, save_student
runs, out, results = sys.argv[1:]
sens = load_scores(f"{results}/scores.safetensors")
paths = yaml.safe_load(open(f"{results}/study.yaml"))["ticket"]["importance"]
imps = {t: load_importance(p) for t, p in paths.items()}
one = {t: with_task_units(sens, {t: i}) for t, i in imps.items()}  # each task's scores divided by their sum
rankings = {
    "sum": with_task_units(sens, imps),  # what the study's score step does (scoring.units: tasks)
    "cola": one["cola"],
    "max": SubarchScores(sens.layers, torch.stack([s.heads for s in one.values()]).amax(0),
                         torch.stack([s.ffn for s in one.values()]).amax(0), sens.hidden, {"units": "max"}),
}
arch = SubArch.parse("D6-A4-H384-I768")
teacher = load_teacher("minilm")
study = read_student_info(f"{runs}/models/extracted")["selection"]
for name, scores in rankings.items():
    sel = select(scores, arch, "importance")
    if name == "sum":  # the study's extraction: the check's baseline must be it
        assert [list(h) for h in sel.heads] == study["heads"], "the summed ranking does not reproduce the study's heads"
        assert [sorted(map(int, n)) for n in sel.neurons] == [sorted(n) for n in study["neurons"]], "nor its neurons"
        continue
    save_student(make_student(teacher, sel, {"units": name}), teacher.tokenizer, f"{out}/models/{name}",
                 {"teacher": "minilm", "units": name, "candidate": arch.name})
PY
CONFIG=$R/finetune/extracted/cola/chosen-seed2/config.yaml
for job in cola:1 cola:2 cola:3 max:1 max:2 max:3; do echo "$job"; done | xargs -P 2 -I{} bash -c '
  name=${1%%:*}; seed=${1#*:}; d=$2; run=$d/runs/$name-seed$seed
  [ -f "$run/results.json" ] && exit 0
  python train.py --config "$3" --model "$d/models/$name" --seed "$seed" --num-threads 1 --no-progress \
    --output-dir "$run" > "$d/$name-seed$seed.log" 2>&1' _ {} "$D" "$CONFIG"
python - "$D" "$R" "$RUNS" <<'PY'
import json, sys
from basics.stats import mean_std, paired_difference
from mtl.teacher import read_student_info
from tasks.score import task_score
d, results, runs = sys.argv[1:]
study = read_student_info(f"{runs}/models/extracted")["selection"]
out = {"protocol": "train.py --config experiments/results/subarch/units/finetune/extracted/cola/chosen-seed2/config.yaml "
                   "--model MODEL --seed SEED --num-threads 1 (lr 1e-4, warm-up 0.06, 3 epochs, holdout 0.12)",
       "command": "GLUE_DIR=../shared/glue bash experiments/results/subarch/units/cola_units/run.sh "
                  "/work/study/runs/subarch_units",
       "rankings": {}}
chosen = next(r for r in json.load(open(f"{results}/table.json"))["rows"] if r["row"] == "extracted")["tasks"]["cola"]["chosen"]
def score(run):
    return task_score(json.load(open(f"{run}/metrics.json"))["cola"])
def kept(sel):
    same_heads = sum(len(set(a) & set(b)) for a, b in zip(sel["heads"], study["heads"]))
    same_neurons = sum(len(set(a) & set(b)) for a, b in zip(sel["neurons"], study["neurons"]))
    return {"heads": sel["heads"], "heads_shared_with_sum": same_heads,
            "neurons_shared_with_sum": same_neurons, "neurons": sum(len(n) for n in sel["neurons"])}
out["rankings"]["sum"] = {"runs": dict(zip(chosen["seeds"], chosen["dev"]["values"])), "runs_from": "the study's extracted row",
                          "kept": kept(study)}
for name in ("cola", "max"):
    sel = read_student_info(f"{d}/models/{name}")["selection"]
    out["rankings"][name] = {"runs": {s: score(f"{d}/runs/{name}-seed{s}") for s in (1, 2, 3)}, "kept": kept(sel)}
for name, r in out["rankings"].items():
    r["mean"], r["std"] = mean_std(list(r["runs"].values()))
    if name != "sum":  # paired by seed, as the study's tables pair rows
        r["minus_sum"] = paired_difference(r["runs"], out["rankings"]["sum"]["runs"]).to_dict()
json.dump(out, open(f"{results}/cola_units/cola_units.json", "w"), indent=1)
print(json.dumps({k: (round(v["mean"], 2), round(v["std"], 2)) for k, v in out["rankings"].items()}))
PY
