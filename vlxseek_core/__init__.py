"""vlxseek_core: VLM-FO1 region-referring vision-language inference, no ROS dependency.

Entry points: :class:`vlxseek_core.pipeline.VLXSeek` (``VLXSeek.from_pretrained``), the task list
:data:`TASKS`, and the ``vlxseek`` command line (:mod:`vlxseek_core.cli`). For proposals from an
external detector: :class:`Proposals` and :func:`postprocess_proposals`.
"""
from .prompts import TASKS as _TASK_SPECS
from .types import Proposals  # noqa: F401  (public)

__version__ = "0.1.0"
TASKS = tuple(_TASK_SPECS)


def __getattr__(name):
    # Import the torch-heavy pipeline only when it is used.
    if name == "VLXSeek":
        from .pipeline import VLXSeek
        return VLXSeek
    if name == "postprocess_proposals":
        from .proposals import postprocess_proposals
        return postprocess_proposals
    raise AttributeError(f"module 'vlxseek_core' has no attribute {name!r}")
