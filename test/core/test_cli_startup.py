"""The ``vlxseek`` parser and the data commands start without torch (their imports take
seconds that ``--help``, ``make-scenes`` and ``make-text-regions`` would otherwise pay)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "accelerate")


def _loaded_after(code):
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(sorted(m for m in "
                          f"sys.modules if m.split('.')[0] in {HEAVY!r}))"],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_building_the_parser_imports_no_torch():
    code = ("from vlxseek_core.cli import build_parser\n"
            "args = build_parser().parse_args(['train', '--stage', '0', '--model', 'm', "
            "'--data', 'd.jsonl', '--out', 'o', '--optim', 'adamw_torch_fused', "
            "'--loss-vocab', 'data', '--loss-on', 'choices'])\n"
            "assert (args.optim, args.loss_vocab, args.loss_on) == "
            "('adamw_torch_fused', 'data', 'choices'), args")
    assert _loaded_after(code) == "[]"


def test_make_text_regions_runs_without_torch(tmp_path):
    out = tmp_path / "records.jsonl"
    code = ("from vlxseek_core.cli import main\n"
            f"assert main(['make-text-regions', {str(out)!r}, '--num', '3', '--seed', '1']) == 0")
    assert _loaded_after(code) == "[]"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["text_regions"] for r in records)
