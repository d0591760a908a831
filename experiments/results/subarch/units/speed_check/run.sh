#!/bin/bash
# Do the distilled ticket's units run at the ticket's speed (the table times the ticket for both: the same per-layer
# shape), and how much does a second measurement move the speed-ups of units/latency.json? The teacher, the uniform
# shape (the study's extracted model), the ticket and the distilled ticket's units, timed together as the study's
# latency step times them (masks.cost.measure_latency: paired rounds against the teacher, 128 tokens, one thread,
# the study's `latency` settings: batches 1 and 32, 9 rounds), on this CPU.
# Usage (from the repository root): bash experiments/results/subarch/units/speed_check/run.sh RUNS
#   RUNS: the fourth study's --output-dir (its models/). Writes experiments/results/subarch/units/speed_check/speed_check.json.
set -euo pipefail
RUNS=${1:?usage: run.sh RUNS}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
python - "$RUNS" <<'PY'
import json, sys
from masks.cost import count_params, measure_latency
from mtl.model import load_encoder
runs = sys.argv[1]
names = {"teacher": "minilm", "extracted": f"{runs}/models/extracted", "ticket": f"{runs}/models/ticket",
         "ticket_distilled": f"{runs}/models/ticket_distilled"}
models = {k: load_encoder(v)[0] for k, v in names.items()}
out = measure_latency(models, (1, 32), 128, 9, reference="teacher", threads=1)
out["params"] = {k: count_params(m) for k, m in models.items()}
out["committed"] = json.load(open("experiments/results/subarch/units/latency.json"))["speedup"]
out["command"] = "bash experiments/results/subarch/units/speed_check/run.sh /work/study/runs/subarch_units"
json.dump(out, open("experiments/results/subarch/units/speed_check/speed_check.json", "w"), indent=1)
print(json.dumps({"now": out["speedup"], "committed": out["committed"]}, indent=1))
PY
