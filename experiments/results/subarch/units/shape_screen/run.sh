#!/bin/bash
# A one-seed screen of other shapes and unit rankings for the fourth search's extraction (experiments/results/subarch/
# units/): does a shape of the same encoder size (44.5 % of the teacher's layers) with more heads and fewer FFN neurons,
# or CoLA's importance weighed up in the tasks' sum (scoring.weights), lift CoLA without losing STS-B?
#   sum-A6-I640, sum-A8-I512: D6-A6-H384-I640 and D6-A8-H384-I512, the units the five tasks' summed importance ranks first;
#   w3-A4-I768, w3-A6-I640: CoLA's share weighed 3 in the sum (masks.subarch_importance.with_task_units).
# Layers and hidden dimensions as in the study (all six, all 384). Each is extracted (not distilled) and fine-tuned on
# CoLA and STS-B as the study fine-tunes the extracted row: the chosen seed-2 run's config of each task (lr 1e-4,
# warm-up 0.06, 3 epochs, batch 32), seed 1 only, one thread each; the baseline is the study's own seed-1 run.
# Usage (from the repository root): GLUE_DIR=../shared/glue bash experiments/results/subarch/units/shape_screen/run.sh DIR
# Writes experiments/results/subarch/units/shape_screen/shape_screen.json. A finished run is kept, not redone.
set -euo pipefail
D=${1:?usage: run.sh DIR}
R=experiments/results/subarch/units
mkdir -p "$D"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
python - "$D" "$R" <<'PY'
import sys
import yaml
from masks.importance import load_importance
from masks.subarch import SubArch, select
from masks.subarch_importance import load_scores, with_task_units
from mtl.teacher import is_student_dir, load_teacher, make_student, read_student_info, save_student
out, results = sys.argv[1:]
sens = load_scores(f"{results}/scores.safetensors")
imps = {t: load_importance(p) for t, p in yaml.safe_load(open(f"{results}/study.yaml"))["ticket"]["importance"].items()}
variants = {"sum-A6-I640": ({}, "D6-A6-H384-I640"), "sum-A8-I512": ({}, "D6-A8-H384-I512"),
            "w3-A4-I768": ({"cola": 3.0}, "D6-A4-H384-I768"), "w3-A6-I640": ({"cola": 3.0}, "D6-A6-H384-I640")}
teacher = None
for name, (weights, arch) in variants.items():
    sel = select(with_task_units(sens, imps, weights), SubArch.parse(arch), "importance")
    model = f"{out}/models/{name}"
    if is_student_dir(model):  # built before: it must be this selection
        assert read_student_info(model)["selection"] == sel.to_dict(), f"{model} holds another selection"
        continue
    teacher = teacher or load_teacher("minilm")
    save_student(make_student(teacher, sel, {"units": name}), teacher.tokenizer, model,
                 {"teacher": "minilm", "units": name, "weights": weights, "candidate": arch})
PY
jobs=""
for name in sum-A6-I640 sum-A8-I512 w3-A4-I768 w3-A6-I640; do jobs="$jobs $name:cola $name:stsb"; done
for job in $jobs; do echo "$job"; done | xargs -P 2 -I{} bash -c '
  name=${1%%:*}; task=${1#*:}; d=$2; run=$d/runs/$name-$task-seed1
  [ -f "$run/results.json" ] && exit 0
  python train.py --config experiments/results/subarch/units/finetune/extracted/$task/chosen-seed2/config.yaml \
    --model "$d/models/$name" --seed 1 --num-threads 1 --no-progress --output-dir "$run" > "$d/$name-$task-seed1.log" 2>&1' _ {} "$D"
python - "$D" "$R" <<'PY'
import json, sys
from masks.cost import EncoderSize, param_counts
from mtl.model import load_encoder
from mtl.teacher import read_student_info
from tasks.score import task_score
d, results = sys.argv[1:]
table = {r["row"]: r for r in json.load(open(f"{results}/table.json"))["rows"]}
def study_seed1(task):  # the study's extracted row, its chosen setting's seed-1 run
    chosen = table["extracted"]["tasks"][task]["chosen"]
    return dict(zip(chosen["seeds"], chosen["dev"]["values"]))[1]
out = {"protocol": "train.py --config experiments/results/subarch/units/finetune/extracted/TASK/chosen-seed2/config.yaml "
                   "--model MODEL --seed 1 --num-threads 1 (lr 1e-4, warm-up 0.06, 3 epochs); one seed: a screen, "
                   "no interval",
       "command": "GLUE_DIR=../shared/glue bash experiments/results/subarch/units/shape_screen/run.sh /work/study/screen",
       "variants": {"sum-A4-I768 (the study)": {"arch": "D6-A4-H384-I768", "weights": {},
                                                 "cola": study_seed1("cola"), "stsb": study_seed1("stsb"),
                                                 "runs_from": "the study's extracted row, seed 1"}}}
for name in ("sum-A6-I640", "sum-A8-I512", "w3-A4-I768", "w3-A6-I640"):
    info = read_student_info(f"{d}/models/{name}")
    info["weights"] = {"cola": 3.0} if name.startswith("w3") else {}
    layers = param_counts(EncoderSize.of(load_encoder(f"{d}/models/{name}")[0]))["layers"]
    out["variants"][name] = {"arch": info["arch"], "weights": info["weights"], "layer_params": layers,
                             **{t: task_score(json.load(open(f"{d}/runs/{name}-{t}-seed1/metrics.json"))[t])
                                for t in ("cola", "stsb")}}
json.dump(out, open(f"{results}/shape_screen/shape_screen.json", "w"), indent=1)
print(json.dumps({k: (v["arch"], round(v["cola"], 1), round(v["stsb"], 1)) for k, v in out["variants"].items()}, indent=0))
PY
