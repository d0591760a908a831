#!/bin/bash
# The pooling pilot of the full sub-architecture study (2026-12-04; experiments/subarch_pooling.py): runs of full/
# at each row's chosen (lr, warm-up) on seed 1, again with mean pooling instead of the first token ([CLS]), on this
# CPU; every other option as in the run's own config.yaml. From the repository root, with the full study's models
# in /work/study/runs/subarch (its output_dir here):
#   GLUE_DIR=../shared/glue bash experiments/results/subarch/pooling/run.sh ROW:TASK ...
# Each run's small files are copied to experiments/results/subarch/pooling/ROW/TASK/mean-seed1/.
set -eu
F=experiments/results/subarch/full R=experiments/results/subarch/pooling O=${O:-/work/study/runs/subarch/pooling}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
for pair in "$@"; do
  row=${pair%%:*} task=${pair##*:}
  cls=$(python -m experiments.subarch_pooling chosen-run $F $row $task)   # the seed-1 run at the chosen setting
  out=$O/$row/$task/mean-seed1
  python train.py --config $cls/config.yaml --pooling mean --glue-dir "$GLUE_DIR" --output-dir $out --num-threads 1 --device auto \
      --no-progress > $O.$row.$task.log 2>&1
  mkdir -p $R/$row/$task/mean-seed1
  cp $out/config.yaml $out/metrics.json $out/metrics.jsonl $out/results.json $R/$row/$task/mean-seed1/
  echo "$row $task: $(python -c "import json,sys; print(json.load(open(sys.argv[1]))['$task'])" $out/metrics.json)"
done
