"""Fine-tuning support: training records, data converters and procedural scenes (issue 9).

* :mod:`.records` — the JSONL training record (LLaVA-style, plus ``task``/``query``/
  ``region_indices`` so the prompt is rebuilt id for id at inference), validation, candidate
  boxes (ground truth + distractors) and the answer builders shared by all data sources;
* :mod:`.converters` — COCO ``instances_*.json`` and RefCOCO (MDETR JSON or JSONL) → records;
  :mod:`.annotation_files` reads their files and checks each entry;
* :mod:`.scenes` — procedural scenes (skimage photo crops and coloured shapes on photo
  backgrounds) with train / held-out splits, written to disk or generated on the fly;
* :mod:`.cli_data` — the ``vlxseek make-scenes`` and ``vlxseek make-train-data`` commands.

Nothing here imports torch; answers are always built with :mod:`vlxseek_core.answer_format`.
"""
