# The superlative phases of scripts/train_small_model.sh, 2s5l to 2s5: sourced by it after
# 2s4, with its functions (scenes, subset, on, phase, forming, n) and settings (S2, CONST,
# STEPS2, FORMED_SUP, OUT). Not a script of its own.
#
# 2s4 leaves a superlative ("the leftmost red square": the named category's copies, then the
# comparison between them) at a coin between the copies. The comparison forms as the lookup did
# in 0t, one list length at a time, and a comparison made for one length does not carry to the
# next: "leftmost", right 0.98 of the time between two copies, was at 2s4's level as soon as a
# third object stood beside them (docs/scene-model-notes.md "Three ways round the two-copy
# binding"). So "leftmost" goes on two, three and four objects (each in its own phase: the
# comparison forms within 100-200 steps, and each length trained alone replaces the one
# before), then on the three together, then on the full scenes. Each later word forms on the
# short lengths at once in 300-600 steps (the comparison made for x is reused; the y words
# least), the words before kept beside (2,000 records a length from the third word on). A
# short-list phase costs the full-scene lookup (0.92 -> 0.40) and the full-scene comparison; a
# phase on the full scenes alone with scenes_s4's records beside brings both back, and short
# lists mixed into it slow that return (docs/scene-model-notes.md "The long lists after the
# length curriculum, E65-E71"). Short-list phases train on the region choices, the full-scene
# ones (absent targets among them) on the whole answer; every phase at 2q's constant rate but
# 2s5.
# The measured runs, by phase: 2s5l E51, 2s5l3 E61, 2s5l4 E63, 2s5lk E64, 2s5lf E65, 2s5t
# E66, 2s5tf E67, 2s5g E68, 2s5o E70, 2s5f E71, 2s5 E72.

# two copies of one category, then three and four objects with two copies among them, every
# candidate an object, superlative `refer` alone, no absent target; the full scenes with
# superlative `refer` records alone (23 % about an absent target). Sets of at least 300
# scenes at any SCALE (FLOOR): a smoke run needs records of each of the six words.
S5A=(--min-objects 2 --max-objects 2 --max-candidates 2 --max-distractors 0 --tasks refer
     --refer-kinds superlative --refer-per-scene 2 --rejection-rate 0 --detect-extra-absent 0)
FLOOR=300 scenes scenes_s5a 14 60000 "${S5A[@]}"
ROWS=(--max-copies 2 "${S5A[@]:6}")  # S5A's but the sizes: at most two copies of a category
FLOOR=300 scenes scenes_s5a3 26 30000 --min-objects 3 --max-objects 3 --max-candidates 3 \
  "${ROWS[@]}"
FLOOR=300 scenes scenes_s5a4 28 20000 --min-objects 4 --max-objects 4 --max-candidates 4 \
  "${ROWS[@]}"
FLOOR=300 scenes scenes_s5c 22 24000 --max-candidates 8 --tasks refer \
  --refer-kinds superlative --refer-per-scene 2
WORDS=(leftmost topmost largest rightmost bottommost smallest)  # in the order they form
for word in "${WORDS[@]}"; do
  for dir in scenes_s5a scenes_s5a3 scenes_s5a4 scenes_s5c; do  # the word's records
    subset "${dir}/train_${word}.jsonl" grep "\"query\": \"the ${word} " \
      "${OUT}/${dir}/train.jsonl"
  done
  # the short lists as trained: 6,000 of two objects, all but the last 1,500 of three (those
  # were the hand runs' probe), every one of four; and their first 2,000, kept beside the
  # words after
  subset "scenes_s5a/train_${word}_6k.jsonl" head -n "$(n 6000)" \
    "${OUT}/scenes_s5a/train_${word}.jsonl"
  subset "scenes_s5a3/train_${word}_t.jsonl" head -n "-$(n 1500)" \
    "${OUT}/scenes_s5a3/train_${word}.jsonl"
  for set in "scenes_s5a/train_${word}_6k" "scenes_s5a3/train_${word}_t" \
             "scenes_s5a4/train_${word}"; do
    subset "${set}_2k.jsonl" head -n "$(n 2000)" "${OUT}/${set}.jsonl"
  done
done
rows() {  # rows(WORD): the word's three short-list sets (two, three, four objects)
  echo "scenes_s5a/train_$1_6k.jsonl scenes_s5a3/train_$1_t.jsonl scenes_s5a4/train_$1.jsonl"
}
kept() {  # kept(WORD): their first 2,000 records each
  echo "scenes_s5a/train_$1_6k_2k.jsonl scenes_s5a3/train_$1_t_2k.jsonl" \
    "scenes_s5a4/train_$1_2k.jsonl"
}
full() { echo "scenes_s5c/train_$1.jsonl"; }  # full(WORD): its full-scene records
subset scenes_s4/train_9k.jsonl head -n "$(n 9000)" "${OUT}/scenes_s4/train.jsonl"
subset scenes_s4/train_20k.jsonl head -n "$(n 20000)" "${OUT}/scenes_s4/train.jsonl"
subset scenes_s4/train_40k.jsonl head -n "$(n 40000)" "${OUT}/scenes_s4/train.jsonl"
# 2s5f's probe: the superlatives of new placements of scenes_s4's kinds (its options, its own
# seed, 400 scenes at any SCALE; the train split: the held-out split's phrasings that no train
# record holds, "the leftmost cat", and its unseen colour-shapes measure something else), about
# 250 records of present targets
SCALE=1 scenes scenes_s4p 21 400 "${S4[@]}"
subset scenes_s4p/sup.jsonl grep '"kind": "superlative"' "${OUT}/scenes_s4p/train.jsonl"
short=("${S2[@]}" "${CONST[@]}" --warmup 20 --loss-on choices)  # the short-list phases
long=("${S2[@]}" "${CONST[@]}" --warmup 20 --loss-on answer)  # the full-scene ones
# "leftmost" on two objects (forms x within 100 steps), three, four (each formed within
# 100-200 steps: 0.92 on three, 0.88 on four), the three together (0.98 / 0.92 / 0.88)
on scenes_s5a/train_leftmost.jsonl
phase stage2s5l "${STEPS2[4]}" "${short[@]}" "${data[@]}"
on scenes_s5a3/train_leftmost_t.jsonl
phase stage2s5l3 "${STEPS2[5]}" "${short[@]}" "${data[@]}"
on scenes_s5a4/train_leftmost.jsonl
phase stage2s5l4 "${STEPS2[6]}" "${short[@]}" "${data[@]}"
lengths=(scenes_s5a/train_leftmost.jsonl scenes_s5a3/train_leftmost_t.jsonl
         scenes_s5a4/train_leftmost.jsonl)
on "${lengths[@]}"
phase stage2s5lk "${STEPS2[7]}" "${short[@]}" "${data[@]}"
# those beside the full scenes: "leftmost" and 9,000 of scenes_s4 (lookup 0.25 -> 0.43,
# full-scene "leftmost" 0.31 -> 0.48)
on "${lengths[@]}" scenes_s4/train_9k.jsonl "$(full leftmost)"
phase stage2s5lf "${STEPS2[8]}" "${long[@]}" "${data[@]}"
# "topmost" on every length at once beside "leftmost"'s and 40,000 of scenes_s4 (topmost
# 0.76 / 0.74 / 0.66 on the short lists, lookup 0.76), then the full scenes alone (full-scene
# leftmost 0.72, topmost 0.55, lookup 0.92)
on $(rows leftmost) "$(full leftmost)" $(rows topmost) "$(full topmost)" \
  scenes_s4/train_40k.jsonl
phase stage2s5t "${STEPS2[9]}" "${long[@]}" "${data[@]}"
on "$(full leftmost)" "$(full topmost)" scenes_s4/train_9k.jsonl
phase stage2s5tf "${STEPS2[10]}" "${long[@]}" "${data[@]}"
# "largest" on the short lists (0.97 / 0.89 / 0.88), then the three opposites (rightmost
# 0.96 / 0.90 / 0.87, bottommost 0.70 / 0.64 / 0.65), the words before kept
on $(rows largest) $(kept leftmost) $(kept topmost)
phase stage2s5g "${STEPS2[11]}" "${short[@]}" "${data[@]}"
on $(rows rightmost) $(rows bottommost) $(rows smallest) $(kept leftmost) $(kept topmost) \
  $(kept largest)
phase stage2s5o "${STEPS2[12]}" "${short[@]}" "${data[@]}"
# the six words on the full scenes beside 20,000 of scenes_s4, a forming phase (by word, on
# the superlatives of scenes_s4p: FORMED_SUP)
six=()
for word in "${WORDS[@]}"; do six+=("$(full "${word}")"); done
on "${six[@]}" scenes_s4/train_20k.jsonl
BY=superlative forming stage2s5f "${STEPS2[13]}" "${OUT}/scenes_s4p/sup.jsonl" \
  "${OUT}/scenes_s4p/images" "${FORMED_SUP}" "${long[@]}" "${data[@]}"
# 2s5: 2s4's phase (its data, its cosine rate) with the full-scene superlatives beside, twice
# (about a fifth of the mix): detection and count back after the superlative phases
on scenes_s4 text_s4_all.jsonl text_s4_detect.jsonl scenes_s5c scenes_s5c
phase stage2s5 "${STEPS2[14]}" "${S2[@]}" $(cosine "${LR2}") --warmup 20 "${data[@]}" \
  --loss-on answer --save-dtype bfloat16
