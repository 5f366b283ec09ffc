#!/usr/bin/env bash
# The committed scene model (models/vlm-fo1-small-scenes, trained from scratch with
# `vlxseek train`, see README "Procedural scenes and the scene model") answers a held-out
# scene it has never seen: `vlxseek query` finds "the red circle" among the scene's candidate
# boxes, and answers "absent" for a category that is not in the picture. Nothing is trained
# or downloaded here.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${REPO}/.venv/bin/python"
MODEL="${REPO}/models/vlm-fo1-small-scenes"
if [[ ! -f "${MODEL}/config.json" ]]; then
  echo "demo_scene_model.sh: ${MODEL} is not there yet: the trained scene model is not" \
       "committed (issue 9; scripts/train_small_model.sh trains it)" >&2
  exit 1
fi
WORK="${REPO}/.tiny_models/demo"
mkdir -p "${WORK}"
# a held-out scene with one red circle, its candidate boxes and an absent category
"${PY}" - "${WORK}" <<'PYEOF'
import json, sys
from PIL import Image
from vlxseek_core.models import held_out_example
scene, boxes, target = held_out_example("red circle")
Image.fromarray(scene.image).save(f"{sys.argv[1]}/scene.png")
json.dump(boxes.tolist(), open(f"{sys.argv[1]}/boxes.json", "w"))
open(f"{sys.argv[1]}/absent.txt", "w").write(scene.absent_categories[0])
print(f"held-out scene {scene.seed}: {', '.join(o.category for o in scene.objects)}")
print(f"ground truth: the red circle is candidate {target}, box {boxes[target].tolist()}")
PYEOF
QUERY=("${PY}" -m vlxseek_core.cli query --model "${MODEL}" --image "${WORK}/scene.png"
       --boxes "$(cat "${WORK}/boxes.json")" --proposal-source none --device cpu --compact)
"${QUERY[@]}" --task refer --query "the red circle" > "${WORK}/refer.json"
"${QUERY[@]}" --task detect --query "$(cat "${WORK}/absent.txt")" > "${WORK}/absent.json"
"${PY}" - "${WORK}" <<'PYEOF'
import json, sys
for name in ("refer", "absent"):
    r = json.load(open(f"{sys.argv[1]}/{name}.json"))
    print(f"\nvlxseek query --task {r['task']} --query {r['query']!r}")
    print(f"  answer: {r['answer']!r}")
    for d in r["detections"]:
        print(f"  region {d['region_index']}: box {[round(v, 1) for v in d['box_xyxy']]}")
    if r.get("rejected"):
        print(f"  absent: {', '.join(r['rejected'])}")
PYEOF
