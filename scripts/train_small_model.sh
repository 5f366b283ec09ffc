#!/usr/bin/env bash
# The recipe of the committed small scene model (models/vlm-fo1-small-scenes, README "A small
# model that works"), end to end with the project's own commands:
#   1. procedural scenes (train split + held-out split with held-out placements and phrasings);
#   2. a random `small` VLM-FO1 (same code path as the 3B, sizes in vlxseek_core/tiny.py);
#   3. stage 0 (vlxseek's extra stage: everything trains, from random initialisation),
#      stage 1 (paper: HFRE + connector + added-token rows) and stage 2 (paper: aux tower,
#      HFRE, connector, LLM) with `vlxseek train`;
#   4. held-out accuracy (benchmarks/bench_training.py).
# Meant for a GPU (the committed model was trained on one H200 in minutes); on a 2-core CPU the
# same steps take hours. Sizes come from the environment so the recipe can be smoke-tested:
#   SCENES (train scenes), HELDOUT, STEPS0/STEPS1/STEPS2 (optimiser steps), BATCH, LR0, WORKERS.
set -euo pipefail
OUT="${1:?usage: train_small_model.sh OUT_DIR}"
PY="${PYTHON:-python3}"
SCENES="${SCENES:-30000}"
HELDOUT="${HELDOUT:-300}"
STEPS0="${STEPS0:-2500}"
STEPS1="${STEPS1:-200}"
STEPS2="${STEPS2:-300}"
BATCH="${BATCH:-64}"
LR0="${LR0:-1e-3}"
WORKERS="${WORKERS:-6}"
PRECISION="${PRECISION:---bf16}"
export TOKENIZERS_PARALLELISM=false
CLI=("${PY}" -m vlxseek_core.cli)
DATA=(--data "${OUT}/scenes/train.jsonl" --images "${OUT}/scenes/images")
COMMON=(--batch-size "${BATCH}" --workers "${WORKERS}" --seed 0 --save-steps 100000
        --logging-steps 50 ${PRECISION})

[[ -f "${OUT}/scenes/train.jsonl" ]] || \
  "${CLI[@]}" make-scenes "${OUT}/scenes" --train "${SCENES}" --heldout "${HELDOUT}" --seed 0 --quiet
[[ -f "${OUT}/init/config.json" ]] || \
  "${CLI[@]}" make-tiny-model "${OUT}/init" --preset small --aux-aspect dynamic --seed 0
"${CLI[@]}" train --stage 0 --model "${OUT}/init" "${DATA[@]}" --out "${OUT}/stage0" \
  --lr "${LR0}" --scheduler constant_with_warmup --warmup 300 --max-steps "${STEPS0}" \
  "${COMMON[@]}" ${STAGE0_EXTRA:-}
"${CLI[@]}" train --stage 1 --model "${OUT}/stage0" "${DATA[@]}" --out "${OUT}/stage1" \
  --lr 1e-3 --scheduler cosine --warmup 20 --max-steps "${STEPS1}" "${COMMON[@]}"
"${CLI[@]}" train --stage 2 --model "${OUT}/stage1" "${DATA[@]}" --out "${OUT}/stage2" \
  --lr 1e-4 --scheduler cosine --warmup 20 --max-steps "${STEPS2}" "${COMMON[@]}" \
  --save-dtype bfloat16
echo "final model: ${OUT}/stage2"
