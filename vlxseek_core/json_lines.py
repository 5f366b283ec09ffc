"""JSONL text: one JSON value per non-blank line, parsed with the line number in any error.
Shared by the training converters and the evaluation data loader."""
from __future__ import annotations

import json
from typing import Any, List, Type

from .errors import VLXSeekError


def parse_json_lines(text: str, path: str, error: Type[VLXSeekError],
                     what: str = "invalid JSON") -> List[Any]:
    """The values of ``text``'s non-blank lines, in order.

    Args:
        text: the file's content. path: the file, for messages. error: the project error type
            to raise. what: the message's words before the parser's reason.

    Raises:
        ``error``: ``"{path}:{line}: {what}: {reason}"`` for the first line that is not JSON,
            including one nested deeper than Python's recursion limit.
    """
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError) as exc:
                raise error(f"{path}:{lineno}: {what}: {exc}") from None
    return values
