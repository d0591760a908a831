#!/bin/bash
# A one-seed screen of other shapes and unit rankings for the fourth search's extraction (experiments/results/subarch/
# units/): does a shape of the same encoder size (44.5 % of the teacher's layers) with more heads and fewer FFN neurons,
# or CoLA's importance weighed up in the tasks' sum (scoring.weights), lift CoLA without losing STS-B?
#   sum-A6-I640, sum-A8-I512: D6-A6-H384-I640 and D6-A8-H384-I512, the units the five tasks' summed importance ranks first;
#   w3-A4-I768, w3-A6-I640: CoLA's share weighed 3 in the sum (masks.subarch_importance.with_task_units).
# Layers and hidden dimensions as in the study (all six, all 384). Each is extracted (not distilled) and fine-tuned on
# CoLA and STS-B as the study fine-tunes the extracted row: the chosen seed-2 run's config of each task (lr 1e-4,
# warm-up 0.06, 3 epochs, batch 32), seed 1, one thread each, and seeds 2 and 3 of the two with the highest seed-1
# CoLA; the baseline is the study's own extracted row, paired by seed. Then the three shapes are timed against the
# teacher as the study times its models (batches 1 and 32, 9 rounds, one thread).
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
jobs=""  # seed 1 of each; seeds 2 and 3 of the two with the highest seed-1 CoLA (sum-A8-I512, w3-A4-I768)
for name in sum-A6-I640 sum-A8-I512 w3-A4-I768 w3-A6-I640; do jobs="$jobs $name:cola:1 $name:stsb:1"; done
for name in sum-A8-I512 w3-A4-I768; do for s in 2 3; do jobs="$jobs $name:cola:$s $name:stsb:$s"; done; done
for job in $jobs; do echo "$job"; done | xargs -P 2 -I{} bash -c '
  IFS=: read name task seed <<< "$1"; d=$2; run=$d/runs/$name-$task-seed$seed
  [ -f "$run/results.json" ] && exit 0
  python train.py --config experiments/results/subarch/units/finetune/extracted/$task/chosen-seed2/config.yaml \
    --model "$d/models/$name" --seed "$seed" --num-threads 1 --no-progress --output-dir "$run" \
    > "$d/$name-$task-seed$seed.log" 2>&1' _ {} "$D"
python - "$D" "$R" <<'PY'
import json, sys
from pathlib import Path
from basics.stats import mean_std, paired_difference
from masks.cost import EncoderSize, measure_latency, param_counts
from mtl.model import load_encoder
from mtl.teacher import read_student_info
from tasks.score import task_score
d, results = sys.argv[1:]
table = {r["row"]: r for r in json.load(open(f"{results}/table.json"))["rows"]}
def study_runs(task):  # the study's extracted row at its chosen setting, by seed
    chosen = table["extracted"]["tasks"][task]["chosen"]
    return dict(zip(chosen["seeds"], chosen["dev"]["values"]))
def summary(runs, base=None):
    out = {"runs": runs}
    if len(runs) > 1:
        out["mean"], out["std"] = mean_std(list(runs.values()))
        if base is not None:
            out["minus_study"] = paired_difference(runs, base).to_dict()
    return out
out = {"protocol": "train.py --config experiments/results/subarch/units/finetune/extracted/TASK/chosen-seed2/config.yaml "
                   "--model MODEL --seed SEED --num-threads 1 (lr 1e-4, warm-up 0.06, 3 epochs); seed 1 of each, "
                   "seeds 1-3 of the two with the highest seed-1 CoLA; paired by seed with the study's extracted row",
       "command": "GLUE_DIR=../shared/glue bash experiments/results/subarch/units/shape_screen/run.sh /work/study/screen",
       "variants": {"sum-A4-I768 (the study)": {"arch": "D6-A4-H384-I768", "weights": {},
                                                 **{t: summary(study_runs(t)) for t in ("cola", "stsb")},
                                                 "runs_from": "the study's extracted row"}}}
for name in ("sum-A6-I640", "sum-A8-I512", "w3-A4-I768", "w3-A6-I640"):
    info = read_student_info(f"{d}/models/{name}")
    entry = {"arch": info["arch"], "weights": {"cola": 3.0} if name.startswith("w3") else {},
             "layer_params": param_counts(EncoderSize.of(load_encoder(f"{d}/models/{name}")[0]))["layers"]}
    for t in ("cola", "stsb"):
        runs = {s: task_score(json.load(open(f"{d}/runs/{name}-{t}-seed{s}/metrics.json"))[t]) for s in (1, 2, 3)
                if (Path(d) / "runs" / f"{name}-{t}-seed{s}" / "metrics.json").is_file()}
        entry[t] = summary(runs, study_runs(t))
    out["variants"][name] = entry
# the shapes' speed against the teacher, timed together as the study's latency step times its models (9 rounds,
# one thread, 128 tokens); w3-A4-I768 stands for D6-A4-H384-I768 (the study's shape) and w3-A6-I640 is sum-A6-I640's
shapes = {"D6-A4-H384-I768": "w3-A4-I768", "D6-A6-H384-I640": "sum-A6-I640", "D6-A8-H384-I512": "sum-A8-I512"}
models = {"teacher": load_encoder("minilm")[0], **{a: load_encoder(f"{d}/models/{n}")[0] for a, n in shapes.items()}}
out["speed"] = measure_latency(models, (1, 32), 128, 9, reference="teacher", threads=1)
json.dump(out, open(f"{results}/shape_screen/shape_screen.json", "w"), indent=1)
print(out["speed"]["speedup"])
for k, v in out["variants"].items():
    print(k, v["arch"], {t: (round(v[t].get("mean", v[t]["runs"][1]), 2), v[t].get("minus_study")) for t in ("cola", "stsb")})
PY
