#!/usr/bin/env bash
# The recipe of the committed small scene model (models/vlm-fo1-small-scenes, README "A small
# model that works"), end to end with the project's own commands:
#   1. procedural scenes (train split + held-out split with held-out placements and phrasings);
#   2. a random `small` VLM-FO1 (same code path as the 3B, sizes in vlxseek_core/tiny.py);
#   3. stage 0 (vlxseek's extra stage: everything trains, from random initialisation) in three
#      parts: 0t, the LLM's region binding on image-free text-region records
#      (`make-text-regions --tasks detect_all`, one list length at a time: 2 regions, 3, then
#      2-4; loss on the grounded words and region choices; AdamW beta2 0.99: README "What
#      forms it"); 0a on detect/refer/count/caption records; 0b on a mix that adds one-region
#      records (caption / present-or-absent detect of a single box: no binding needed, so the
#      region features and the query-region match can form first) and detect_all records (every
#      object with its regions: several region tokens to bind per answer); then stage 1 (paper:
#      HFRE + connector + added-token rows) and stage 2 (paper: aux tower, HFRE, connector, LLM),
#      all with `vlxseek train`;
#   4. held-out accuracy (benchmarks/bench_training.py).
# Sizes come from the environment (defaults = the committed model, trained on a 2-core CPU with
# two data-parallel processes, LAUNCH below) so the recipe can be smoke-tested or scaled:
#   SCENES (train scenes), HELDOUT, SIZE (px), CANDIDATES (boxes per scene), STEPS0/1/2
#   (optimiser steps), MINUTES0 (time cap of stage 0), BATCH (per process), LR0, WORKERS,
#   PRECISION (--bf16 on a GPU), LAUNCH (how `vlxseek` runs: one process or torchrun).
set -euo pipefail
OUT="${1:?usage: train_small_model.sh OUT_DIR}"
PY="${PYTHON:-python3}"
SCENES="${SCENES:-12000}"
HELDOUT="${HELDOUT:-100}"
SIZE="${SIZE:-112}"
CANDIDATES="${CANDIDATES:-8}"
TEXT_RECORDS="${TEXT_RECORDS:-80000}"  # per 0t phase
STEPS0T=(${STEPS0T:-800 800 1000})  # steps of the 0t phases: 2 regions, 3, 2-4
BATCH0T="${BATCH0T:-32}"
LR0T="${LR0T:-3e-3}"
STEPS0="${STEPS0:-1300}"
STOP0="${STOP0:-400}"
STEPS0B="${STEPS0B:-550}"
STEPS1="${STEPS1:-40}"
STEPS2="${STEPS2:-80}"
BATCH="${BATCH:-16}"
LR0="${LR0:-2e-3}"
WORKERS="${WORKERS:-0}"
PRECISION="${PRECISION:-}"
# vision side at a tenth of the rate in stage 0: at one rate the region features collapse
# (README "Procedural scenes and the scene model")
SCALES0=(--lr-scale towers=0.1 --lr-scale hfre=0.1 --lr-scale connector=0.1)
# two CPU processes of one thread each: on 2 cores this beats one process with two threads
# several times over (no OpenMP barrier per small op); gloo on the loopback interface
LAUNCH="${LAUNCH:-${PY} -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1
  --master_port ${PORT:-29531}}"
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=lo
CLI=("${PY}" -m vlxseek_core.cli)
TRAIN=(${LAUNCH} -m vlxseek_core.cli train)
DATA=(--data "${OUT}/scenes/train.jsonl" --images "${OUT}/scenes/images")
MIX=(--data "${OUT}/scenes_mix/train.jsonl" --images "${OUT}/scenes_mix/images")
COMMON=(--batch-size "${BATCH}" --workers "${WORKERS}" --seed 0 --save-steps 200
        --save-total-limit 1 --logging-steps 10 --device cpu ${PRECISION})

[[ -f "${OUT}/scenes/train.jsonl" ]] || \
  "${CLI[@]}" make-scenes "${OUT}/scenes" --train "${SCENES}" --heldout "${HELDOUT}" --seed 0 \
    --size "${SIZE}" --max-candidates "${CANDIDATES}" --quiet
[[ -f "${OUT}/scenes_mix/train.jsonl" ]] || \
  "${CLI[@]}" make-scenes "${OUT}/scenes_mix" --train "${MIX_SCENES:-8000}" --heldout "${HELDOUT}" \
    --seed 0 --size "${SIZE}" --max-candidates "${CANDIDATES}" --quiet \
    --tasks detect detect_all refer count caption single
[[ -f "${OUT}/init/config.json" ]] || \
  "${CLI[@]}" make-tiny-model "${OUT}/init" --preset small --aux-aspect dynamic --seed 0
# 0t: the binding circuit of the random LLM, on words (global batch 2 x BATCH0T), one list
# length per phase
PHASES0T=("2 2" "3 3" "2 4")
prev="${OUT}/init"
for i in 0 1 2; do
  read -r lo hi <<< "${PHASES0T[$i]}"
  [[ -f "${OUT}/text_regions_${lo}${hi}.jsonl" ]] || \
    "${CLI[@]}" make-text-regions "${OUT}/text_regions_${lo}${hi}.jsonl" --num "${TEXT_RECORDS}" \
      --seed "$((i + 1))" --min-regions "${lo}" --max-regions "${hi}" --tasks detect_all
  "${TRAIN[@]}" --stage 0 --model "${prev}" --data "${OUT}/text_regions_${lo}${hi}.jsonl" \
    --out "${OUT}/stage0t_${lo}${hi}" --lr "${LR0T}" --scheduler constant_with_warmup \
    --warmup 50 --max-steps "${STEPS0T[$i]}" --loss-on choices --adam-beta2 0.99 \
    --batch-size "${BATCH0T}" --workers "${WORKERS}" --seed 0 --save-steps 250 \
    --save-total-limit 1 --logging-steps 25 --device cpu ${PRECISION}
  prev="${OUT}/stage0t_${lo}${hi}"
done
"${TRAIN[@]}" --stage 0 --model "${prev}" "${DATA[@]}" --out "${OUT}/stage0" \
  --lr "${LR0}" --scheduler cosine --warmup 100 --max-steps "${STEPS0}" \
  --stop-at-step "${STOP0}" "${SCALES0[@]}" "${COMMON[@]}"
"${TRAIN[@]}" --stage 0 --model "${OUT}/stage0/checkpoint-${STOP0}" "${MIX[@]}" \
  --out "${OUT}/stage0b" --lr "${LR0}" --scheduler cosine --warmup 30 --max-steps "${STEPS0B}" \
  "${SCALES0[@]}" "${COMMON[@]}"
"${TRAIN[@]}" --stage 1 --model "${OUT}/stage0b" "${MIX[@]}" --out "${OUT}/stage1" \
  --lr 1e-3 --scheduler cosine --warmup 5 --max-steps "${STEPS1}" "${COMMON[@]}"
"${TRAIN[@]}" --stage 2 --model "${OUT}/stage1" "${MIX[@]}" --out "${OUT}/stage2" \
  --lr 1e-4 --scheduler cosine --warmup 5 --max-steps "${STEPS2}" "${COMMON[@]}" \
  --save-dtype bfloat16
echo "final model: ${OUT}/stage2"
