"""Helpers of the checkpoint-validation tests: cheap, editable copies of the tiny checkpoint.

``module_checkpoint`` hard-links (or copies) the session's tiny checkpoint once per module;
:func:`fresh_copy` links that into a new folder per test or example, so only the files a test
rewrites cost anything. Always write with :func:`write_json` / :func:`write_text`: they
replace the link by a new file instead of writing through it into the shared copy.
"""
import json
import os
import shutil

import pytest


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def fresh_copy(src: str, dst: str) -> str:
    shutil.copytree(src, dst, copy_function=_link_or_copy)
    return dst


def write_text(path, text: str) -> None:
    if os.path.lexists(path):
        os.remove(path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path, data) -> None:
    write_text(path, json.dumps(data))


def read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def module_checkpoint(tiny_model_dir, tmp_path_factory):
    return fresh_copy(tiny_model_dir, str(tmp_path_factory.mktemp("ckpt") / "base"))


@pytest.fixture
def ckpt(module_checkpoint, tmp_path):
    """A per-test copy of the tiny checkpoint (hard links)."""
    return fresh_copy(module_checkpoint, str(tmp_path / "ckpt"))
