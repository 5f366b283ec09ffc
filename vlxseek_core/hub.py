"""Fetch VLM-FO1 checkpoints from the Hugging Face Hub (safetensors only).

:func:`download` wraps ``huggingface_hub.snapshot_download`` (progress bars, resumable partial
downloads, revision pinning) and fetches only what :func:`vlxseek_core.pipeline.VLXSeek.
from_pretrained` reads: ``config.json``, tokenizer files, ``preprocessor_config.json``,
``generation_config.json``, ``*.safetensors`` and the shard index — never pickled weights
(``*.bin``/``*.pt``, see :mod:`vlxseek_core.checkpoint`). :func:`resolve_model_path` turns a
directory or a hub repo id into a local directory. Every failure is a one-line :class:`HubError`.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from .errors import VLXSeekError

DEFAULT_REPO_ID = "omlab/VLM-FO1_Qwen2.5-VL-3B-v01"
ALLOW_PATTERNS = (
    "config.json", "generation_config.json", "preprocessor_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "chat_template.json",
    "*.safetensors", "model.safetensors.index.json",
)
"""Files a checkpoint needs (``vocab.json``/``merges.txt`` for tokenizers without a
``tokenizer.json``)."""
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(VLXSeekError):
    """A checkpoint could not be found or downloaded (message is one line, no traceback)."""


def looks_like_repo_id(text: str) -> bool:
    """``owner/name`` with hub-legal characters (a path that does not exist may look alike)."""
    return bool(_REPO_ID.match(text or "")) and ".." not in text


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def download(repo_id: str = DEFAULT_REPO_ID, local_dir: Optional[str] = None,
             revision: Optional[str] = None, cache_dir: Optional[str] = None,
             local_files_only: bool = False, token: Optional[str] = None) -> str:
    """Download (or find in the cache) a checkpoint's safetensors snapshot.

    Args:
        repo_id: hub model repo ``owner/name``.
        local_dir: copy the files into this directory (default: the HF cache only).
        revision: branch, tag or commit hash to pin (default: ``main``).
        cache_dir: HF cache directory (default: ``HF_HOME``/``HF_HUB_CACHE``).
        local_files_only: never touch the network; use cached files only.
        token: hub token for gated/private repos (default: the logged-in token, if any).

    Returns:
        The local snapshot directory.

    Raises:
        HubError: offline without cached files, network failure, unknown/gated repo or
            revision, invalid repo id, or a local I/O error — with a one-line explanation.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    from .checkpoint import PICKLE_SUFFIXES

    ignore_patterns = [f"*{suffix}" for suffix in PICKLE_SUFFIXES]
    what = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        return snapshot_download(repo_id, revision=revision, local_dir=local_dir,
                                 cache_dir=cache_dir, local_files_only=local_files_only,
                                 allow_patterns=list(ALLOW_PATTERNS),
                                 ignore_patterns=ignore_patterns, token=token)
    except LocalEntryNotFoundError as exc:
        if local_files_only or constants.HF_HUB_OFFLINE:
            why = ("local_files_only is set" if local_files_only
                   else "offline mode is on (HF_HUB_OFFLINE=1)")
            raise HubError(f"cannot get {what}: {why} and it is not in the local cache; "
                           "download it once while online or pass a local directory") from None
        cause = exc.__cause__ or exc
        raise HubError(f"cannot reach the Hugging Face Hub for {what} and it is not cached "
                       f"(check the network or proxy): {type(cause).__name__}: "
                       f"{_one_line(cause)}") from None
    except GatedRepoError:
        raise HubError(f"{repo_id} is gated: accept its terms on huggingface.co and log in "
                       "(`hf auth login`) or pass a token") from None
    except RepositoryNotFoundError:
        raise HubError(f"model repo {repo_id!r} not found on the Hub (or private without a "
                       "valid token)") from None
    except RevisionNotFoundError:
        raise HubError(f"revision {revision!r} not found in {repo_id}") from None
    except HfHubHTTPError as exc:
        raise HubError(f"download of {what} failed: {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - connection drops mid-file, disk full, bad id
        raise HubError(f"download of {what} failed: {type(exc).__name__}: {_one_line(exc)} "
                       "(finished files are kept; run again to resume)") from None


def resolve_model_path(path_or_repo_id: str, revision: Optional[str] = None,
                       local_files_only: bool = False, cache_dir: Optional[str] = None) -> str:
    """A local checkpoint directory for a directory path or a hub repo id.

    An existing directory is returned unchanged (no hub access). Otherwise a string of the
    form ``owner/name`` is fetched with :func:`download` (or found in the HF cache).

    Raises:
        HubError: neither an existing directory nor a repo id, or the download failed.
    """
    if os.path.isdir(path_or_repo_id):
        return path_or_repo_id
    if os.path.exists(path_or_repo_id):
        raise HubError(f"{path_or_repo_id!r} is a file; a checkpoint is a directory")
    if not looks_like_repo_id(path_or_repo_id):
        raise HubError(f"{path_or_repo_id!r} is neither an existing directory nor a hub repo id "
                       "(owner/name)")
    return download(path_or_repo_id, revision=revision, local_files_only=local_files_only,
                    cache_dir=cache_dir)
