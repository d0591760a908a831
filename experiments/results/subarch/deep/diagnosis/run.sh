#!/bin/bash
# Why the extracted D6-A4-H384-I768 does not learn STS-B: 100 fine-tuning steps (1,600 training examples,
# 300 dev examples, fp32, lr 1e-4, seed 1) of models that differ only in which heads and FFN neurons they keep.
# Usage (from the repository root): GLUE_DIR=../shared/glue bash experiments/results/subarch/deep/diagnosis/run.sh RUNS
#   RUNS: the deeper study's --output-dir (its models/extracted and models/ticket); variants and runs go to RUNS/diagnosis.
# Writes experiments/results/subarch/deep/diagnosis/stsb_100_steps.json. A finished run is kept, not redone.
set -euo pipefail
RUNS=${1:?usage: run.sh RUNS (the output dir of the deeper study)}
D=$RUNS/diagnosis
mkdir -p "$D"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
python - "$RUNS" "$D" <<'PY'
import json, random, sys
from masks.subarch import Selection
from mtl.teacher import load_teacher, make_student, read_student_info, save_student
runs, out = sys.argv[1:]
chosen = Selection.from_dict(read_student_info(f"{runs}/models/extracted")["selection"])
ticket_heads = json.load(open(f"{runs}/models/ticket/config.json"))["kept_heads"]
teacher = load_teacher("minilm")
every_head, every_neuron = [list(range(12))] * 6, [list(range(1536))] * 6
rng = random.Random(0)
variants = {"chosen_heads_every_neuron": (chosen.heads, every_neuron),
            "every_head_chosen_neurons": (every_head, chosen.neurons),
            "random_4_heads_every_neuron": ([sorted(rng.sample(range(12), 4)) for _ in range(6)], every_neuron),
            "ticket_heads_every_neuron": (ticket_heads, every_neuron)}
for name, (heads, neurons) in variants.items():
    sel = Selection(tuple(range(6)), tuple(map(tuple, heads)), tuple(map(tuple, neurons)), tuple(range(384)))
    save_student(make_student(teacher, sel, {"diagnosis": name}), teacher.tokenizer, f"{out}/models/{name}",
                 {"teacher": "minilm", "diagnosis": name})
PY
declare -A MODELS=([teacher]=minilm [extracted]=$RUNS/models/extracted [ticket]=$RUNS/models/ticket
  [chosen_heads_every_neuron]=$D/models/chosen_heads_every_neuron [every_head_chosen_neurons]=$D/models/every_head_chosen_neurons
  [random_4_heads_every_neuron]=$D/models/random_4_heads_every_neuron [ticket_heads_every_neuron]=$D/models/ticket_heads_every_neuron)
for name in "${!MODELS[@]}"; do
  [ -f "$D/runs/$name/results.json" ] && continue
  python train.py --model "${MODELS[$name]}" --tasks stsb --max-train-samples 1600 --max-eval-samples 300 --max-steps 100 \
    --log-every 10 --precision fp32 --lr 1e-4 --seed 1 --num-threads 1 --no-progress --output-dir "$D/runs/$name" > "$D/$name.log" 2>&1
done
python - "$D" experiments/results/subarch/deep/diagnosis/stsb_100_steps.json <<'PY'
import glob, json, os, sys
from mtl.teacher import is_student_dir, read_student_info
d, out = sys.argv[1:]
rows = {}
for f in sorted(glob.glob(f"{d}/runs/*/results.json")):
    name = f.split("/")[-2]
    r = json.load(open(f))
    losses = [json.loads(l) for l in open(os.path.dirname(f) + "/metrics.jsonl")]
    kept = None
    if is_student_dir(f"{d}/models/{name}"):
        sel = read_student_info(f"{d}/models/{name}")["selection"]
        kept = {"heads": sel["heads"], "neurons_per_layer": [len(n) for n in sel["neurons"]]}
    rows[name] = {"stsb_dev_300": r["metrics"]["stsb"], "train_loss": [l["loss"]["stsb"] for l in losses if "loss" in l],
                  "kept": kept}
json.dump({"protocol": "train.py --tasks stsb --max-train-samples 1600 --max-eval-samples 300 --max-steps 100 --log-every 10 "
           "--precision fp32 --lr 1e-4 --seed 1 --num-threads 1 (2 epochs of 50 steps; the better epoch on the dev slice)",
           "command": "GLUE_DIR=../shared/glue bash experiments/results/subarch/deep/diagnosis/run.sh /work/study/runs/subarch_deep",
           "runs": rows}, open(out, "w"), indent=1)
print(out)
PY
