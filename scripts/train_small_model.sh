#!/usr/bin/env bash
# The recipe of the small scene model (README "Procedural scenes and the scene model"; it will
# go to models/vlm-fo1-small-scenes once it reaches the targets), end to end with the
# project's own commands:
#   1. a random `small` VLM-FO1 (same code path as the 3B, sizes in vlxseek_core/tiny.py);
#   2. stage 0 (vlxseek's extra stage: everything trains, from random initialisation):
#      0t  the LLM's region binding on image-free text-region records
#          (`make-text-regions --tasks detect_all`), one list length at a time: 2 regions, 3,
#          2-4, 2-6; loss on the grounded words and region choices; AdamW beta2 0.99
#          (docs/scene-model-notes.md "What forms it"); at lr 1e-3 and with the loss's
#          softmax over the data's tokens alone (--loss-negatives 0): at 3e-3, or with the
#          sampled column for the other rows, whose first 150 steps drain the mass a random
#          model puts on 151,936 rows, the 2-row lookup did not form in 1,000 steps and the
#          2-6 phase stalled short of a search over every length (docs/scene-model-notes.md
#          "The sampled column"); the 2-6 phase on a cosine rate (below);
#      0tp the same lookup over the scenes' own phrases (`make-text-regions
#          --scene-categories`: rows "red circle", "blue circle", "cat"), 2-4 rows: rows that
#          share their last word make the lookup read the whole phrase, where 0t's keys on
#          the last token (docs/scene-model-notes.md "A lookup over the scene phrases on
#          text"); at 0t's rate (at 3e-3 4 rows fell to 0.67, at 1e-3 0.89) and with the
#          sampled column, whose first steps drain the mass 0t left off the shortlist;
#   3. the paper's stage 1 (HFRE, connector and the added tokens' rows train; towers, LLM and
#      the original vocabulary rows frozen), right after 0tp: 1a aligns image regions to the
#      phrase rows that 0tp's lookup reads, on 2-4 object scenes of distinct categories whose
#      colours are unique, without distractors, `detect_all` alone (every candidate is an
#      object; the colour picks out each object), lr 1e-3, loss on the grounded words and
#      region choices. It reached 0.80 first region held out in 300 steps, where stage 0 on
#      the same scenes (the whole model, vision side at a tenth of the rate) reached 0.62 in
#      450 (docs/scene-model-notes.md "The paper's stage 1 aligns image regions");
#   4. the paper's stage 2 (aux tower, HFRE, connector, LLM; the primary ViT frozen), one
#      phase per skill, at lr 1e-3 with the vision side, HFRE and connector at a tenth, on long
#      lists from the start (2-6 objects among up to 8 candidates):
#      2c  the colour-shape conjunction, straight after 1a: `detect_all` on scenes where a
#          colour is always shared by two shapes, loss on the choices, a forming phase
#          (BY=colour: photos, shared and unique colours each). From 1a it found a target whose
#          colour another shape shares 0.73 after 600 steps, every list length 0.77-0.82,
#          where the same phase after the recipe's 2-4 object query phases (2r to 2s3e:
#          `refer` by colour or by shape alone, scenes whose colours are unique) reached 0.64
#          and stayed there through 1,600 steps: single-attribute lookups hold the
#          conjunction off (docs/scene-model-notes.md "What brings the shape in, and what
#          holds it off", E13c; those phases are gone from the recipe);
#      2q  the query on those lists (detect, refer, detect_all; copies allowed) before any
#          absent target, 2c's scenes beside, loss on the choices: in 800 steps the
#          conjunction held and rose (shared colour 0.74 -> 0.80) while `refer` formed (by
#          category 0.34 -> 0.71, by colour alone 0.14 -> 0.78, by shape 0.30 -> 0.67;
#          superlatives 0.38; docs/scene-model-notes.md "What brings the shape in", E14;
#          without 2c's scenes such a phase lost it, E8);
#      2n  then rejection on them at a low rate (10 % of detect/refer records about an absent
#          target, an absent name beside present ones in 10 % of detect records), the whole
#          answer (None, and the stop after each </objects> beside 2-8 word text detect
#          records), 2c's scenes beside, on a falling rate (rejection learnt before the query
#          made detect a coin-flip None, docs/scene-model-notes.md "A query in the prompt",
#          "2s3q and 2s3n");
#      2s4 the full scenes (1-6 objects with copies, up to 8 candidates; 24,000 of them),
#          every task, and 2-8 word text records, saved in bfloat16. Generated on 800 held-out
#          records of the full scenes: detect F1 0.85, REC 0.50, count 0.76, rejection 0.96,
#          0.21 false None (on 6,000 scenes: 0.84 / 0.47 / 0.69 / 0.97 / 0.21); on new
#          placements of the train kinds `refer` by category, colour and shape is right 0.99
#          of the time and superlatives 0.37: the held-out gap is the superlatives and the
#          held-out colour-shapes (docs/scene-model-notes.md "The findings in brief");
#      2s5l-2s5 the superlatives ("the leftmost red square": the named category's copies,
#          then the comparison between them), which 2s4 leaves at a coin between two copies:
#          "leftmost" on two objects, three, four, then all three lengths, then the full
#          scenes; each later word on the three short lengths at once, then the full scenes;
#          2s5 2s4's phase with the superlatives beside, saved in bfloat16
#          (scripts/train_small_model_superlatives.sh; docs/scene-model-notes.md "The long
#          lists after the length curriculum, E65-E71"). 2s5f (E71) took the six words to
#          0.76-0.95 teacher-forced on new full scenes (first region, chance 0.15);
#   5. held-out accuracy (benchmarks/bench_training.py, benchmarks/probe_region_choice.py).
# The forming phases (0t, 0tp, 1a, 2c, 2s5f) train until their lookup has formed, not for a fixed
# number of steps: the lookup forms as a late transition whose step varies between runs, and a
# phase that ends before it leaves every later phase without one (docs/scene-model-notes.md "The
# fresh run never formed the lookup"). After its steps, a forming phase's model is probed on
# held-out records of its list lengths (benchmarks/probe_region_choice.py --formed: teacher-forced
# first region, lift over chance (first - chance) / (1 - chance) at least FORMED, default 0.6: 0.8
# on 2 regions, 0.73 on 3, 0.67 on 6; on text rows on every list length alike (--by regions: a
# lookup bound to the short lists, right on 2 rows and near chance on 6, has not formed); on image
# rows (1a) FORMED_SCENES, default 0.4 over all lengths: 0.7 on 2 objects, 0.6 on 3, since the
# features bound the image lookup, not its transition (1a stood at a lift of 0.62 after 150 steps,
# 0.69 after 300); on 2c's image rows FORMED in each colour group (--by colour: photos, colours
# another shape shares, unique colours; the phase exists for the shared ones: E13c passed at 600
# steps, lift 0.68, not at 300, 0.39); on 2s5f's full-scene superlatives by word (FORMED_SUP,
# below); below it the phase trains FORM_STEPS more (--resume
# with a larger --max-steps), up to FORM_CAP times its steps (0t's 3-row lookup formed at step
# 1,225 of a 600-step phase in one run; in another it stayed at chance through 2,400 steps). Then
# the phase starts over with the next data order (--seed 1, 2, ...; the stalled attempt is kept as
# PHASE.stalled_seedK): in 0t's later phases from a new model of the phase before, trained again
# with its own next data order (kept as PHASE.redone_seedK), since whether a lookup grows out of
# the one before depends on that model (from one 2-row model none of five 3-row runs formed, from
# seven of eight others one formed within 1,225 steps; docs/scene-model-notes.md "Where the 3-row
# lookup forms"); in the other forming phases from the same model. After FORM_SEEDS data orders of
# a phase the script stops with exit status 3 and says so (raise FORM_SEEDS or FORM_CAP and run it
# again to train on). Each probe is kept as PHASE/lookup_STEP.json, the passing one also as
# PHASE/lookup_formed.json.
# Steps are those of the measured runs (README). Sizes come from the
# environment so the recipe can be smoke-tested or scaled: TEXT_RECORDS, STEPS0T (4 phases),
# STEPS0TP, STEPS1A, STEPS2 (2c 2q 2n 2s4 2s5l 2s5l3 2s5l4 2s5lk 2s5lf 2s5t 2s5tf 2s5g
# 2s5o 2s5f 2s5), BATCH (per process,
# 64), LR0T (the stage-0 rate), LR2 (stage 2's), LOSS_VOCAB, PRESET (model sizes: small;
# tiny for smoke runs), SIZE (px), WORKERS (data loader processes; 12 on the 16-core H200
# machine: 3.4 steps/s there, 2.6 with 6), PRECISION (--bf16 on a GPU), SCALE (divides
# every record and scene count), LAUNCH (how `vlxseek train` runs: one process or
# torchrun), DEVICE (cpu or cuda), UNTIL (stop after that phase), FORMED, FORMED_SCENES,
# FORMED_SUP (2s5f's probe: each of the six words on the full scenes), FORM_STEPS,
# FORM_CAP, FORM_SEEDS (above; -1 passes any model: smoke runs).
# The run resumes: a finished phase (its model saved) is skipped, an unfinished one goes on
# from its latest complete checkpoint-N, and data sets already written are kept; a file that
# marks a step done is written whole or not at all, so a run stopped anywhere (a session's
# end) resumes.
set -euo pipefail
OUT="${1:?usage: train_small_model.sh OUT_DIR}"
PY="${PYTHON:-python3}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"  # benchmarks/ is not installed
SCALE="${SCALE:-1}"
n() { echo $(( $1 / SCALE > 0 ? $1 / SCALE : 1 )); }
TEXT_RECORDS="$(n "${TEXT_RECORDS:-80000}")"  # per 0t phase
STEPS0T=(${STEPS0T:-1000 600 600 1000})  # 0t phases: 2 regions, 3, 2-4, 2-6
STEPS0TP="${STEPS0TP:-600}"
STEPS1A="${STEPS1A:-300}"
# 2c 900 steps, though its probe passed at 600: from 600 to 900 the unique colours and photos
# rose (0.83 -> 0.88, 0.88 -> 1.00; shared 0.73 -> 0.74), and 2q was measured from there
# 2c 2q 2n 2s4, then the superlatives: 2s5l 2s5l3 2s5l4 2s5lk 2s5lf 2s5t 2s5tf 2s5g 2s5o 2s5f 2s5
STEPS2=(${STEPS2:-900 800 400 1000 300 300 200 300 600 600 600 300 300 1800 600})
HELDOUT="$(n "${HELDOUT:-300}")"  # held-out scenes per set, held-out records per 0t phase
FORMED="${FORMED:-0.6}"
FORMED_SCENES="${FORMED_SCENES:-0.4}"
# 2s5f: each word at a lift of 0.7 (about 0.75 first region at the probe's chance, 0.15): the
# measured run passed at 1,800 steps, weakest "topmost" 0.76 (lift 0.715), others 0.80-0.95
FORMED_SUP="${FORMED_SUP:-0.7}"
FORM_STEPS="${FORM_STEPS:-200}"
FORM_CAP="${FORM_CAP:-3}"
FORM_SEEDS="${FORM_SEEDS:-4}"
DEVICE="${DEVICE:-cpu}"
SIZE="${SIZE:-112}"
BATCH="${BATCH:-64}"
LR0T="${LR0T:-1e-3}"
LR2="${LR2:-1e-3}"
WORKERS="${WORKERS:-0}"
PRECISION="${PRECISION:-}"
# One process of 64 with a thread per core by default. Alone on this 2-core CPU it runs a
# text-region step in 0.24 s against 0.41 s for torchrun's two processes of 32 (the same
# global batch and samples), a scene step in 1.74 s against 1.83 s; beside another busy
# process its OpenMP threads wait on each other (0.69 s against 0.50 s): there
# LAUNCH="python -m torch.distributed.run --nproc_per_node 2 ..." BATCH=32 OMP_NUM_THREADS=1
# does better (docs/scene-model-notes.md "One process").
LAUNCH="${LAUNCH:-${PY}}"
export TOKENIZERS_PARALLELISM=false GLOO_SOCKET_IFNAME=lo
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
# glibc malloc: large tensors (the 78 MB embedding gradient, made anew every step) from the
# heap and kept after free, not a fresh mmap whose pages the kernel zeroes each time: half the
# system time and 6-10 % of a step on 2 cores (docs/scene-model-notes.md "Where a step's time
# goes"); other C libraries ignore these
export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_:-0}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-68719476736}"
CLI=("${PY}" -m vlxseek_core.cli)
TRAIN=(${LAUNCH} -m vlxseek_core.cli train)
# fused AdamW: the same update in one kernel; its loop over the 151,936-row embedding was a
# quarter of a text-region step on this CPU (README "Fused AdamW")
COMMON=(--batch-size "${BATCH}" --workers "${WORKERS}" --save-total-limit 1
        --logging-steps 25 --device "${DEVICE}" --optim adamw_torch_fused ${PRECISION})
# every phase (the LLM, then the region side, are trained from random initialisation): AdamW
# beta2 0.99, the loss's softmax over the data's tokens (half the step time; LOSS_VOCAB=full:
# all rows)
OPT=(--adam-beta2 0.99 --loss-vocab "${LOSS_VOCAB:-data}")
SCRATCH=(--stage 0 "${OPT[@]}")
# stage 2: the vision side, HFRE and connector at a tenth of the LLM's rate (in stage 0 at one
# rate the region features collapsed); constant after a short warm-up, or cosine from a peak
S2=(--stage 2 "${OPT[@]}" --lr-scale towers=0.1 --lr-scale hfre=0.1 --lr-scale connector=0.1
    --save-steps 100)
CONST=(--lr "${LR2}" --scheduler constant_with_warmup)
cosine() { echo --lr "$1" --scheduler cosine; }

text() {  # text(FILE LO HI TASK NUM SEED [options...]): text-region records, written once
  local file="$1" lo="$2" hi="$3" task="$4" num="$5" seed="$6"
  shift 6
  [[ -f "${OUT}/${file}" ]] || "${CLI[@]}" make-text-regions "${OUT}/${file}" --num "${num}" \
    --seed "${seed}" --min-regions "${lo}" --max-regions "${hi}" --tasks "${task}" "$@"
}
scenes() {  # scenes(DIR SEED TRAIN_SCENES make-scenes options...): scenes + records, written
  local dir="$1" seed="$2" num="$3"  # once; sets of the same kind need their own seeds
  shift 3
  num="$(n "${num}")"  # at least FLOOR scenes where the caller sets it
  (( num >= ${FLOOR:-1} )) || num="${FLOOR}"
  [[ -f "${OUT}/${dir}/train.jsonl" ]] || "${CLI[@]}" make-scenes "${OUT}/${dir}" \
    --train "${num}" --heldout "${HELDOUT}" --seed "${seed}" --size "${SIZE}" --quiet "$@"
}
subset() {  # subset(FILE COMMAND...): FILE from COMMAND's output, written once (a failed
  [[ -f "${OUT}/$1" ]] && return  # command, such as a grep that finds none, leaves no file)
  "${@:2}" > "${OUT}/$1.part"
  mv "${OUT}/$1.part" "${OUT}/$1"
}
prev="${OUT}/init"
train() {  # train(NAME STEPS train options...): `vlxseek train` from ${prev} to STEPS steps,
  local name="$1" steps="$2"  # from the phase's latest checkpoint-N if it has one; data
  shift 2  # order --seed SEED (0 but in a forming phase's later attempts)
  "${TRAIN[@]}" --model "${prev}" --out "${OUT}/${name}" --max-steps "${steps}" --resume "$@" \
    "${COMMON[@]}" --seed "${SEED:-0}"
}
next() {  # next(NAME): the phase is done; the next one starts from it
  prev="${OUT}/$1"
  if [[ "${UNTIL:-}" == "$1" ]]; then echo "stopped after ${prev}"; exit 0; fi
}
phase() {  # phase(NAME STEPS train options...): skipped once its final model is saved
  [[ -f "${OUT}/$1/vlxseek_training.json" ]] || train "$@"
  next "$1"
}
attempts() {  # attempts(NAME): how many earlier attempts of the phase were set aside
  find "${OUT}" -maxdepth 1 -name "$1.*_seed*" | wc -l
}
forming() {  # forming(NAME STEPS HELDOUT IMAGES FORMED train options...): a phase trained
  local name="$1" first="$2" heldout="$3" images="$4" formed="$5"  # until the lookup has
  shift 5  # formed (top of the file); BY=regions: on every list length (probe --by);
  # BACK=PHASE: a stalled attempt redoes that phase (the one before) with its next data
  # order and sets REDO, for the caller to run it again (0t: the 3-row lookup formed or not
  # by the 2-row model it started from, docs/scene-model-notes.md "Where the 3-row lookup
  # forms")
  local dir="${OUT}/${name}" cap=$(( first * FORM_CAP )) steps="${first}" trained rc seed redone
  until [[ -f "${dir}/lookup_formed.json" ]]; do
    seed="$(attempts "${name}")"  # the attempt's data order
    if [[ -f "${dir}/vlxseek_training.json" ]]; then  # trained to its last --max-steps
      trained="$("${PY}" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
        "${dir}/vlxseek_training.json" global_step)"
      rc=0
      PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}" "${PY}" -m benchmarks.probe_region_choice \
        --models "${dir}" --data "${heldout}" --images "${images}" --limit 300 \
        --device "${DEVICE}" --formed "${formed}" ${BY:+--by "${BY}"} \
        --json "${dir}/lookup_${trained}.json" || rc=$?
      if (( rc == 0 )); then
        cp "${dir}/lookup_${trained}.json" "${dir}/lookup_formed.json.part"
        mv "${dir}/lookup_formed.json.part" "${dir}/lookup_formed.json"  # whole or not at all
        break
      fi
      (( rc == 3 )) || { echo "${name}: the lookup probe failed (exit ${rc})" >&2; exit "${rc}"; }
      if (( trained >= cap && seed + 1 >= FORM_SEEDS )); then
        echo "${name}: the lookup has not formed in ${FORM_SEEDS} data orders of up to" \
          "${cap} steps (lift ${formed} on ${heldout}; ${dir}/lookup_${trained}.json):" \
          "stopped at FORM_SEEDS=${FORM_SEEDS}, FORM_CAP=${FORM_CAP} times ${first} steps:" \
          "raise either and run again to train on" >&2
        exit 3
      fi
      if (( trained >= cap )); then  # stuck at chance: another data order
        echo "${name}: not formed in ${trained} steps with --seed ${seed}; kept as" \
          "${dir}.stalled_seed${seed}"
        mv "${dir}" "${dir}.stalled_seed${seed}"
        if [[ -n "${BACK:-}" ]]; then  # ... from a new model of the phase before
          redone="$(attempts "${BACK}")"  # the phase before's attempts set aside
          echo "${name}: ${BACK} again with --seed $(( redone + 1 )) (kept as" \
            "${OUT}/${BACK}.redone_seed${redone}), then ${name} with --seed $(( seed + 1 ))"
          mv "${OUT}/${BACK}" "${OUT}/${BACK}.redone_seed${redone}"
          REDO=1
          return 0
        fi
        echo "${name}: starting over from ${prev} with --seed $(( seed + 1 ))"
        seed=$(( seed + 1 ))
        steps="${first}"
      else
        steps=$(( trained + FORM_STEPS < cap ? trained + FORM_STEPS : cap ))
      fi
    fi
    SEED="${seed}" train "${name}" "${steps}" "$@"
  done
  next "${name}"
}

[[ -f "${OUT}/init/generation_config.json" ]] || \
  "${CLI[@]}" make-tiny-model "${OUT}/init" --preset "${PRESET:-small}" --aux-aspect dynamic \
    --space-variant-similarity 0.9 --seed 0
# 0t: the binding circuit of the random LLM, on words, one list length per phase
PHASES0T=("2 2" "3 3" "2 4" "2 6")
# the forming phases at a constant rate (a transition whose step varies); the 2-6 search, once
# formed, settles on a falling rate: cosine ended it at 0.88 / 0.91 / 1.00 on 6 rows in three
# seeds against 0.72 / 0.83 / 0.94 at a constant one (docs/scene-model-notes.md "A falling
# rate settles the 2-6 search")
SCHED0T=(constant_with_warmup constant_with_warmup constant_with_warmup cosine)
i=0
while (( i < ${#PHASES0T[@]} )); do  # i goes back one where a phase redoes the one before
  read -r lo hi <<< "${PHASES0T[$i]}"
  text "text_regions_${lo}${hi}.jsonl" "${lo}" "${hi}" detect_all "${TEXT_RECORDS}" "$((i + 1))"
  text "text_regions_${lo}${hi}_heldout.jsonl" "${lo}" "${hi}" detect_all "${HELDOUT}" \
    "$((i + 101))"
  prev="${OUT}/init" back=
  (( i == 0 )) || { back="stage0t_${PHASES0T[i - 1]// /}"; prev="${OUT}/${back}"; }
  REDO=
  BY=regions BACK="${back}" forming "stage0t_${lo}${hi}" "${STEPS0T[$i]}" \
    "${OUT}/text_regions_${lo}${hi}_heldout.jsonl" . "${FORMED}" "${SCRATCH[@]}" \
    --lr "${LR0T}" --scheduler "${SCHED0T[$i]}" --warmup 50 --loss-negatives 0 \
    --data "${OUT}/text_regions_${lo}${hi}.jsonl" --loss-on choices --save-steps 250
  if [[ -n "${REDO}" ]]; then i=$(( i - 1 )); else i=$(( i + 1 )); fi
done
# 0tp's records: the scenes' phrases as text rows, 2-4 of them
text text_scene_24.jsonl 2 4 detect_all "${TEXT_RECORDS}" 5 --scene-categories
text text_scene_24_heldout.jsonl 2 4 detect_all "${HELDOUT}" 105 --scene-categories
# 1a: 2-4 objects, detect_all only, every object of its own category (--max-copies 1: with
# repeats a block lists its regions ascending, and "always <region0> first" was right 0.72 of
# the time, chance 0.39), categories in a random order (as the text records list them), every
# colour unique in the scene
scenes scenes_s1u_24 4 16000 --min-objects 2 --max-objects 4 --max-copies 1 \
  --max-distractors 0 --tasks detect_all --detect-all-order random --unique-colours
# 2s4: the full scenes (up to 6 objects, 8 candidates) and 2-8 word records; 24,000 scenes
# (38 s to write): on 6,000 (about 7 records of each trained on in 2s4) count was 0.74 on the
# 40 held-out scenes, on 24,000 0.94 (docs/scene-model-notes.md "What the held-out split
# measures", E18)
S4=(--max-candidates 8 --tasks detect detect_all refer count caption single)
scenes scenes_s4 0 24000 "${S4[@]}"
text text_s4_all.jsonl 2 8 detect_all "$(n 15000)" 14
text text_s4_detect.jsonl 2 8 detect "$(n 15000)" 15
on() {  # on(SCENES_DIR... SCENES_DIR/FILE.jsonl... TEXT_FILE.jsonl...): fills `data` with
  local arg images=()  # scene sets (train.jsonl or another record file of the folder) and
  data=(--data)  # text-region record files (their image folder: ".", unused)
  for arg in "$@"; do
    if [[ "${arg}" == */*.jsonl ]]; then
      data+=("${OUT}/${arg}"); images+=("${OUT}/${arg%%/*}/images")
    elif [[ "${arg}" == *.jsonl ]]; then data+=("${OUT}/${arg}"); images+=(.)
    else data+=("${OUT}/${arg}/train.jsonl"); images+=("${OUT}/${arg}/images"); fi
  done
  data+=(--images "${images[@]}")
}
BY=regions forming stage0tp_24 "${STEPS0TP}" "${OUT}/text_scene_24_heldout.jsonl" . \
  "${FORMED}" "${SCRATCH[@]}" --lr "${LR0T}" --scheduler constant_with_warmup --warmup 50 \
  --data "${OUT}/text_scene_24.jsonl" --loss-on choices --save-steps 250
# the paper's stage 1 at its rate, 1e-3, straight from 0tp, on detect_all scenes alone: on
# scenes that mix in `refer` by shape or colour, records a frozen LLM cannot fit, it reached
# 0.53 in 300 steps (docs/scene-model-notes.md "The paper's stage 1 aligns image regions",
# "Stage 2 teaches the tasks on the aligned model")
on scenes_s1u_24
forming stage1a_24 "${STEPS1A}" "${OUT}/scenes_s1u_24/heldout.jsonl" \
  "${OUT}/scenes_s1u_24/images" "${FORMED_SCENES}" --stage 1 "${OPT[@]}" --lr 1e-3 \
  --scheduler constant_with_warmup --warmup 20 "${data[@]}" --loss-on choices --save-steps 100
# 2c: the colour-shape conjunction on long lists, straight after 1a: 2-6 objects of distinct
# categories, a colour always shared by two shapes, among up to 8 candidates, detect_all alone,
# trained until it has formed in each colour group (BY=colour, FORMED)
scenes scenes_s2c 11 8000 --min-objects 2 --max-objects 6 --max-copies 1 --max-candidates 8 \
  --tasks detect_all --detect-all-order random --shared-colour 1
on scenes_s2c
BY=colour forming stage2c "${STEPS2[0]}" "${OUT}/scenes_s2c/heldout.jsonl" \
  "${OUT}/scenes_s2c/images" "${FORMED}" "${S2[@]}" "${CONST[@]}" --warmup 20 "${data[@]}" \
  --loss-on choices
# 2q: the query on the long lists before any absent target, 2c's scenes beside: 2-6 objects,
# copies allowed (superlatives occur), among up to 8 candidates, detect, refer (2 a scene) and
# detect_all, loss on the choices
L=(--min-objects 2 --max-objects 6 --max-candidates 8 --detect-all-order random
   --detect-all-article 0.5 --tasks detect refer detect_all --refer-per-scene 2)
scenes scenes_s3q 8 8000 "${L[@]}" --rejection-rate 0 --detect-extra-absent 0
on scenes_s3q scenes_s2c
phase stage2q "${STEPS2[1]}" "${S2[@]}" "${CONST[@]}" --warmup 20 "${data[@]}" \
  --loss-on choices
# 2n: then rejection on the long lists at a low rate, the whole answer, 2c's scenes beside
scenes scenes_s3n 9 8000 "${L[@]}" --rejection-rate 0.1 --detect-extra-absent 0.1
on scenes_s3n scenes_s2c text_s4_detect.jsonl
phase stage2n "${STEPS2[2]}" "${S2[@]}" $(cosine "${LR2}") --warmup 20 "${data[@]}" \
  --loss-on answer
on scenes_s4 text_s4_all.jsonl text_s4_detect.jsonl
phase stage2s4 "${STEPS2[3]}" "${S2[@]}" $(cosine "${LR2}") --warmup 20 "${data[@]}" \
  --loss-on answer --save-dtype bfloat16
# 2s5l-2s5: the superlatives, one list length, then one word, at a time
source "${REPO}/scripts/train_small_model_superlatives.sh"
echo "final model: ${OUT}/stage2s5"
