"""Start-up of the detector nodes: parameter declaration, model loading, warm-up.

Every failure here becomes :class:`StartupError` with a message that names the component that
failed, so the one FATAL line (or the managed node's failed ``configure``) says what to fix:

* a parameter: ``invalid parameter 'max_proposals': ...``, ``parameter 'model_path' is empty``;
* the proposal detector: ``cannot load the proposal model proposal_model='...' ...``;
* the VLM checkpoint: ``cannot load the VLM-FO1 checkpoint model_path='...' ...``;
* the warm-up inference: ``warm-up inference failed ...``.

The proposal detector is loaded first, on its own: it is the smaller model (it fails sooner)
and a failure inside one combined load could not say which of the two models was at fault.

Start-up is interruptible: the slow steps (loading, warm-up) run through
:func:`run_interruptibly`, in a worker thread that the starting thread leaves behind as soon as
shutdown is requested (SIGINT/SIGTERM shut the rclpy context down); it then raises
:class:`StartupInterrupted` and no interface is created. The worker touches no ROS entity, and
the process exits without waiting for it (:func:`abandoned_work`).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, TypeVar

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from vlxseek_ros.parameters import (BUSY_POLICIES, DTYPES, PROPOSAL_SOURCES, TOPIC_SOURCE, Spec)

# Synthetic warm-up frame: a VGA camera frame of deterministic noise, one box in its middle.
WARMUP_SIZE = (480, 640)
# Tokens decoded by the warm-up (enough to run the decoding loop and its constraint).
WARMUP_TOKENS = 8
# How often a thread waiting for start-up work checks whether shutdown was requested, seconds.
STOP_POLL_S = 0.02

T = TypeVar("T")
_abandoned: List[threading.Thread] = []  # workers left running by an interrupted start-up


class StartupError(RuntimeError):
    """The node cannot start (bad parameters or a model that does not load)."""


class StartupInterrupted(Exception):
    """Shutdown was requested while the node was starting; the message says during what."""


@contextmanager
def startup_guard(node: Any) -> Iterator[None]:
    """Turn any error while a node starts into :class:`StartupError`, destroying the node.

    :class:`StartupInterrupted` passes unchanged (the node is destroyed too).
    """
    try:
        yield
    except Exception as exc:
        node.destroy_node()
        if isinstance(exc, (StartupError, StartupInterrupted)):
            raise
        raise StartupError(f"start-up failed: {type(exc).__name__}: {exc}") from exc


def run_interruptibly(work: Callable[[], T], stop: Callable[[], bool], what: str) -> T:
    """Run ``work()`` in a worker thread and return its result, unless shutdown comes first.

    The calling thread checks ``stop()`` every :data:`STOP_POLL_S` seconds while it waits.

    Args:
        work: the slow step (loading a model, the warm-up inference); must not use ROS.
        stop: True once shutdown was requested (e.g. ``lambda: not node.context.ok()``).
        what: the step, for the message (``"loading the models"``).

    Raises:
        StartupInterrupted: ``stop()`` was true before or during the step; the worker is left
            running (a daemon thread, see :func:`abandoned_work`) and its result is discarded.
        Exception: whatever ``work()`` raised.
    """
    if stop():
        raise StartupInterrupted(f"before {what}")
    outcome: Dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=target, name=f"vlxseek start-up: {what}", daemon=True)
    worker.start()
    while not done.wait(STOP_POLL_S):
        if stop():
            _abandoned.append(worker)
            raise StartupInterrupted(f"while {what}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def create_unless_stopping(create: Callable[[], None], stop: Callable[[], bool],
                           what: str) -> None:
    """Run ``create()`` (ROS entities) unless shutdown began; never after it began.

    Raises:
        StartupInterrupted: ``stop()`` was true before, or became true while ``create()`` ran
            and made it fail (rclpy refuses entities of a context that was shut down); what was
            created goes with the node.
    """
    if stop():
        raise StartupInterrupted(f"before creating {what}")
    try:
        create()
    except Exception:
        if stop():
            raise StartupInterrupted(f"while creating {what}") from None
        raise


def abandoned_work() -> bool:
    """Whether a worker left behind by an interrupted start-up is still running.

    The process must then exit without waiting for it (``os._exit``): the interpreter's exit
    would stop it inside native model code.
    """
    return any(worker.is_alive() for worker in _abandoned)


def descriptor(spec: Spec) -> ParameterDescriptor:
    """The ROS ``ParameterDescriptor`` of one parameter of :mod:`vlxseek_ros.parameters`."""
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                            additional_constraints=spec.constraints)
    if spec.float_range is not None:
        d.floating_point_range = [FloatingPointRange(
            from_value=float(spec.float_range[0]), to_value=float(spec.float_range[1]),
            step=0.0)]
    if spec.int_range is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.int_range[0]),
                                        to_value=int(spec.int_range[1]), step=1)]
    return d


def declare_parameters(node: Any, specs: Mapping[str, Spec]) -> Dict[str, Any]:
    """Declare ``specs`` on ``node``; returns their values by name.

    Raises:
        StartupError: a given value has the wrong type or is out of range; names the parameter.
    """
    values = {}
    for name, spec in specs.items():
        try:
            values[name] = node.declare_parameter(name, spec.default, descriptor(spec)).value
        except Exception as exc:  # rclpy's InvalidParameter{Type,Value}Exception
            raise StartupError(f"invalid parameter '{name}': {exc}") from exc
    return values


def check_parameters(params: Mapping[str, Any]) -> None:
    """Reject start-up parameters that cannot work, naming the parameter.

    Raises:
        StartupError: empty ``model_path``, unknown ``dtype``/``proposal_source``/``busy_policy``.
    """
    if not params["model_path"]:
        raise StartupError("parameter 'model_path' is empty: set it to a VLM-FO1 checkpoint "
                           "directory (e.g. -p model_path:=/models/vlm-fo1)")
    for name, allowed in (("dtype", DTYPES), ("proposal_source", PROPOSAL_SOURCES),
                          ("busy_policy", BUSY_POLICIES)):
        if params[name] not in allowed:
            raise StartupError(f"parameter {name}={params[name]!r} is not one of {allowed}")


def _resolve_device(requested: str) -> str:
    from vlxseek_core.pipeline import resolve_device
    try:
        return resolve_device(requested)
    except ValueError as exc:
        raise StartupError(f"parameter device={requested!r}: {exc}") from exc


def load_proposal_detector(params: Mapping[str, Any], device: str) -> Any:
    """The built-in proposal detector of ``proposal_source`` (None for ``topic``/``none``).

    Raises:
        StartupError: the detector does not load; names ``proposal_model`` and its path.
    """
    kind = params["proposal_source"]
    if kind in (TOPIC_SOURCE, "none"):
        return None
    from vlxseek_core.proposals import DEFAULT_MODELS, build_proposal_source
    model = params["proposal_model"] or None
    try:
        return build_proposal_source(kind, model, device=device,
                                     min_score=params["proposal_min_score"],
                                     nms_iou=params["proposal_nms_iou"],
                                     max_proposals=params["max_proposals"])
    except Exception as exc:  # any failure to load is fatal and must name the detector
        which = (f"proposal_model='{model}'" if model else
                 f"proposal_model='' (the default of {kind}: '{DEFAULT_MODELS.get(kind)}')")
        raise StartupError(
            f"cannot load the proposal model {which} (proposal_source={kind}, "
            f"device={device}): {type(exc).__name__}: {exc}") from exc


def load_pipeline(params: Mapping[str, Any]) -> Any:
    """Load the VLM-FO1 pipeline (and its proposal detector) named by the node parameters.

    Raises:
        StartupError: invalid parameters, or a model that does not load; the message names the
            parameter or the model (``proposal_model`` / ``model_path``) that failed.
    """
    check_parameters(params)
    device = _resolve_device(params["device"])
    detector = load_proposal_detector(params, device)
    model_path = params["model_path"]
    try:
        from vlxseek_core import VLXSeek
        pipe = VLXSeek.from_pretrained(
            model_path, device=device, dtype=params["dtype"], proposal_source="none",
            max_proposals=params["max_proposals"],
            constrained_decoding=params["constrained_decoding"])
    except Exception as exc:  # any failure to load is fatal and must name the path
        raise StartupError(
            f"cannot load the VLM-FO1 checkpoint model_path='{model_path}' "
            f"(device={device}, dtype={params['dtype']}): {type(exc).__name__}: {exc}") from exc
    pipe.proposal_source = detector  # loaded above, on its own (see the module docstring)
    return pipe


def load_interruptibly(params: Mapping[str, Any], stop: Callable[[], bool],
                       log: Callable[[str], None]) -> Any:
    """:func:`load_pipeline` through :func:`run_interruptibly`, announced with ``log``.

    Raises:
        StartupError: a bad parameter or a model that does not load, named.
        StartupInterrupted: ``stop()`` became true first.
    """
    log(f"loading the models: model_path '{params['model_path']}', proposal_source "
        f"{params['proposal_source']}, device {params['device']}")
    return run_interruptibly(lambda: load_pipeline(params), stop, "loading the models")


def resolved_device(pipe: Any, requested: str) -> str:
    """The device the pipeline's weights are on (``cpu``, ``cuda:0``), else ``requested``."""
    try:
        device = getattr(pipe, "device", None)
    except Exception:  # a half-unloaded model: report what was asked for
        device = None
    return str(device) if device is not None else str(requested)


def warm_up(pipe: Any, max_new_tokens: int) -> float:
    """Run one inference on a synthetic frame; returns its wall time in milliseconds.

    The first inference of a process pays one-time costs (lazy imports, kernel selection and
    CUDA context set-up, allocator growth): 16.7 s against 0.2-1.0 s afterwards on the tiny
    model. Paying them here, before the service exists, keeps them out of the first call.
    The VLM answers about one user box (so it runs whatever the proposal source); a built-in
    detector is run on the same frame too.

    Raises:
        StartupError: the inference raised (the model cannot serve).
    """
    height, width = WARMUP_SIZE
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    box = np.array([[width / 4, height / 4, 3 * width / 4, 3 * height / 4]], np.float32)
    start = time.perf_counter()
    try:
        if getattr(pipe, "proposal_source", None) is not None:
            pipe.propose(rgb)
        pipe.query(rgb, "object", task="detect", boxes=box,
                   max_new_tokens=max(1, min(WARMUP_TOKENS, int(max_new_tokens))))
    except Exception as exc:
        raise StartupError(f"warm-up inference failed (parameter warmup: false skips it): "
                           f"{type(exc).__name__}: {exc}") from exc
    return (time.perf_counter() - start) * 1e3
