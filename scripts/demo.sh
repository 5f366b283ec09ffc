#!/usr/bin/env bash
# The main job on a real photo: detect "person; flag" on skimage's astronaut with a tiny random
# VLM-FO1 checkpoint and a tiny random OmDet-Turbo detector (both written once to .tiny_models/).
# Random weights give random labels; the point is the full pipeline and its JSON output.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${REPO}/.venv/bin/python"
MODELS="${REPO}/.tiny_models"
[[ -f "${MODELS}/vlm-fo1-tiny/config.json" ]] || \
  "${PY}" -m vlxseek_core.cli make-tiny-model "${MODELS}/vlm-fo1-tiny"
[[ -f "${MODELS}/omdet-turbo-tiny/config.json" ]] || \
  "${PY}" -m vlxseek_core.cli make-tiny-proposer "${MODELS}/omdet-turbo-tiny"
"${PY}" -c "from skimage import data; from PIL import Image; \
Image.fromarray(data.astronaut()).save('${MODELS}/astronaut.png')"
"${PY}" -m vlxseek_core.cli query --model "${MODELS}/vlm-fo1-tiny" \
  --image "${MODELS}/astronaut.png" --query "person; flag" \
  --proposal-source omdet_turbo --proposal-model "${MODELS}/omdet-turbo-tiny" \
  --min-score 0.0 --device cpu --max-new-tokens 64 > "${MODELS}/demo_result.json"
"${PY}" - "${MODELS}/demo_result.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"answer: {r['answer']!r}")
print(f"{len(r['proposals']['boxes_xyxy'])} proposals, {len(r['detections'])} detections")
for d in r["detections"][:5]:
    print(f"  region {d['region_index']}: box {d['box_xyxy']} score {d['score']:.2f}")
print("timings (ms):", {k: round(v, 1) for k, v in r["timings_ms"].items()})
PYEOF
echo "full JSON: ${MODELS}/demo_result.json"
