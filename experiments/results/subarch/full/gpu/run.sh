#!/bin/bash
# The GPU part of the full sub-architecture study (issue 15), run once on the GPU machine lent to a session
# (one NVIDIA H200), from the repository root, with .device/ carried (minilm16: half_model.py's fp16 copy of the
# packaged MiniLM, its model.safetensors optionally xz-compressed; glue: a copy of ../shared/glue without QNLI and
# the test files; neither is committed):
#   bash experiments/results/subarch/full/gpu/run.sh
# It measures the error surrogate of every candidate whose error is missing, and again of those in controls.txt
# (measured on the CPU before: the device check), selects, builds and distils the chosen architecture, and runs
# every fine-tuning run; CPU timing stays on the CPU (candidates' latency.json before, the table's latency after).
# What comes back: $OUT/results.tgz (the results folder, as the engine published it), $OUT/logs.tgz, and the
# distilled model's weights in pieces (the fine-tuning runs left for the CPU need the model; cat joins them). LIMIT (seconds, default
# 540) stops every engine at one deadline; what finished is in the results folder, the rest runs on the CPU later.
set -u
G=experiments/results/subarch/full/gpu
export PYTHONPATH=$PWD:$PWD/$G/stub GLUE_DIR=$PWD/.device/glue HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 MINILM_DIR=/tmp/minilm OMP_NUM_THREADS=1
M=.device/minilm16
if [ -f $M/model.safetensors.xz ]; then  # compressed to fit the 64 MiB (xz -k model.safetensors; 10 % smaller)
  mkdir -p /tmp/m16 && cp -r $M/. /tmp/m16/ && rm /tmp/m16/model.safetensors.xz &&
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      $M/model.safetensors.xz /tmp/m16/model.safetensors && M=/tmp/m16 || exit 1
fi
python3 $G/half_model.py $M /tmp/minilm --to fp32 || exit 1
# STUDY and RESULTS: the study and its results folder (default the full study; the deeper choice:
# STUDY=experiments/subarch_deep.yaml RESULTS=experiments/results/subarch/deep O=/work/study/runs/subarch_deep)
STUDY=${STUDY:-experiments/subarch.yaml} RESULTS=${RESULTS:-experiments/results/subarch/full}
O=${O:-/work/study/runs/subarch} R=${R:-/tmp/results}
mkdir -p $O $RESULTS && rm -rf $R && cp -r $RESULTS $R && rm -rf $R/gpu $R/table.*
# the controls whose error is still the CPU's are measured again (the first call, 2026-12-04, did; it also left out
# the 4 teacher runs finished on the CPU, kept in cpu_side.json, so that they trained again on the GPU)
[ "$RESULTS" = experiments/results/subarch/full ] || CONTROLS=${CONTROLS:-/dev/null}  # the full study's alone
for n in $(grep -v "^#" ${CONTROLS:-$G/controls.txt}); do
  if grep -q '"device": "cuda' $R/candidates/$n.json 2>/dev/null; then continue; fi
  rm -f $R/candidates/$n.json $R/candidates/$n/distill.json $R/candidates/$n/log.jsonl
done
STUDY=$STUDY python3 - <<'PY'
import yaml
import os
s = yaml.safe_load(open(os.environ["STUDY"]))
s["search"]["teacher_cache"] = False  # the teacher runs live on the GPU: the same losses (tests/test_subarch_study.py)
yaml.safe_dump(s, open("/tmp/gpu.yaml", "w"), sort_keys=False)
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
L=/tmp/logs; rm -rf $L; mkdir -p $L; T0=$(date +%s); DEADLINE=$((T0 + ${LIMIT:-540}))
study() {  # study LOG JOBS ONLY: the engine on a part of the graph, stopped at the deadline
  local left=$((DEADLINE - $(date +%s)))
  if [ $left -lt 5 ]; then echo "$1: not started (deadline)"; return 1; fi
  timeout $left python3 -m experiments.subarch /tmp/gpu.yaml --output-dir $O --results-dir $R \
      --threads-per-run 1 --status-every 30 --jobs $2 --only "$3" > $L/$1.log 2>&1
  local rc=$?; echo "$1: rc $rc at $(( $(date +%s) - T0 )) s"; return $rc
}
# the errors and the choice first: the other parts would otherwise measure the same candidates at once
if [ "${DISTILLED_ONLY:-0}" = 1 ]; then  # the third call (2026-12-04, second session): only the distilled row was left
  study pretrain 1 models/distilled && study finetune2 10 'finetune/distilled/*'
elif study search 14 select; then
  study pretrain 14 models/distilled & A=$!  # alone in its engine, beside the runs that do not need it
  study finetune1 6 'finetune/teacher/*,finetune/extracted/*,finetune/ticket/*' & B=$!
  wait $A && study finetune2 10 'finetune/distilled/*'
  wait $B
fi
for f in $L/*.log; do echo "== $f"; grep -E "^\[(FAILED|failed|left)|Error|error:|^select:" $f | tail -n 8; tail -n 2 $f; done
cp -r $O/logs $L/jobs 2>/dev/null
tar czf $OUT/results.tgz -C $R . && tar czf $OUT/logs.tgz -C $L .
if [ -f $O/models/distilled/model.safetensors ]; then  # fp32 as trained (53 MiB in 4 pieces of 15 MiB)
  split -b 15M $O/models/distilled/model.safetensors $OUT/distilled.part &&
  tar czf $OUT/distilled-files.tgz -C $O/models/distilled --exclude model.safetensors --exclude checkpoint.pt .
fi
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
