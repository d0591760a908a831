#!/bin/bash
# Do the third search's candidates fail its STS-B check because of their shape or because of which units they keep?
# The same reference fine-tune as the search (experiments/subarch_task.yaml: 100 steps, 3,200 training examples,
# fp32, lr 1e-4, seed 1, the whole STS-B dev set) of six-layer extractions whose heads and FFN neurons are chosen by
# the GLUE tasks' own importance (the dense runs' importance.safetensors the ticket row is cut from, each task's
# scores divided by their sum, then summed over the tasks) instead of the search's task-free output sensitivity;
# and, for scale, the teacher and the deeper study's compacted ticket under the same protocol.
# Usage (from the repository root): GLUE_DIR=../shared/glue bash experiments/results/subarch/task/units/run.sh RUNS DEEP
#   RUNS: the third study's --output-dir (its scores.safetensors); DEEP: the deeper study's (its models/ticket).
# Writes experiments/results/subarch/task/units/stsb_reference.json. A finished run is kept, not redone.
set -euo pipefail
RUNS=${1:?usage: run.sh RUNS DEEP}
DEEP=${2:?usage: run.sh RUNS DEEP}
D=$RUNS/units
mkdir -p "$D"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
python - "$RUNS" "$D" <<'PY'
import sys
import yaml
from masks.importance import load_importance
from masks.subarch import SubArch, select
from masks.subarch_importance import SubarchScores, load_scores
from mtl.teacher import load_teacher, make_student, save_student
runs, out = sys.argv[1:]
sens = load_scores(f"{runs}/scores.safetensors")
paths = yaml.safe_load(open(f"{runs}/study.yaml"))["ticket"]["importance"]
imps = [load_importance(p) for p in paths.values()]
tasks = SubarchScores(sens.layers, sum(i.heads / i.heads.sum() for i in imps), sum(i.ffn / i.ffn.sum() for i in imps),
                      sens.hidden, {"units": "GLUE task importance: " + ", ".join(paths)})
teacher = load_teacher("minilm")
for arch in ("D6-A4-H384-I768", "D6-A8-H384-I384", "D6-A6-H384-I768"):
    for label, scores in (("task_importance", tasks), ("output_sensitivity", sens)):
        sel = select(scores, SubArch.parse(arch), "importance")
        save_student(make_student(teacher, sel, {"units": label}), teacher.tokenizer, f"{out}/models/{arch}-{label}",
                     {"teacher": "minilm", "units": label, "candidate": arch})
PY
MODELS="teacher=minilm ticket=$DEEP/models/ticket"
for arch in D6-A4-H384-I768 D6-A8-H384-I384 D6-A6-H384-I768; do
  MODELS="$MODELS $arch-task_importance=$D/models/$arch-task_importance"
done
MODELS="$MODELS D6-A6-H384-I768-output_sensitivity=$D/models/D6-A6-H384-I768-output_sensitivity"
for pair in $MODELS; do echo "$pair"; done | xargs -P 2 -I{} bash -c '
  name=${1%%=*}; model=${1#*=}; d=$2
  [ -f "$d/runs/$name/results.json" ] && exit 0
  python train.py --model "$model" --tasks stsb --max-train-samples 3200 --epochs 1 --max-steps 100 --batch-size 32 \
    --lr 1e-4 --precision fp32 --log-every 10 --seed 1 --num-threads 1 --no-progress --output-dir "$d/runs/$name" \
    > "$d/$name.log" 2>&1' _ {} "$D"
python - "$D" "$RUNS" experiments/results/subarch/task/units/stsb_reference.json <<'PY'
import glob, json, os, sys
from mtl.teacher import is_student_dir, read_student_info
from tasks.score import task_score
d, runs, out = sys.argv[1:]
rows = {}
for f in sorted(glob.glob(f"{d}/runs/*/results.json")):
    name = f.split("/")[-2]
    metrics = json.load(open(f))["metrics"]["stsb"]
    losses = [json.loads(line) for line in open(os.path.dirname(f) + "/metrics.jsonl")]
    kept = None
    if is_student_dir(f"{d}/models/{name}"):
        sel = read_student_info(f"{d}/models/{name}")["selection"]
        kept = {"heads": sel["heads"], "neurons_per_layer": [len(n) for n in sel["neurons"]]}
    rows[name] = {"stsb_dev": metrics, "score": task_score(metrics),
                  "train_loss": [r["loss"]["stsb"] for r in losses if "loss" in r], "kept": kept}
search = {c["name"]: 100.0 - c["objectives"]["error"] for c in json.load(open(f"{runs}/search.json"))["candidates"]}
json.dump({"protocol": "train.py --tasks stsb --max-train-samples 3200 --epochs 1 --max-steps 100 --batch-size 32 --lr 1e-4 "
           "--precision fp32 --log-every 10 --seed 1 --num-threads 1 (experiments/subarch_task.yaml's reference task)",
           "command": "GLUE_DIR=../shared/glue bash experiments/results/subarch/task/units/run.sh "
                      "/work/study/runs/subarch_task /work/study/runs/subarch_deep",
           "runs": rows, "search_output_sensitivity": {k: search[k] for k in ("D6-A4-H384-I768", "D6-A8-H384-I384")}},
          open(out, "w"), indent=1)
print(out)
PY
