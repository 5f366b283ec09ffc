"""``vlxseek_detector`` as a managed (lifecycle) node: same parameters and interfaces.

Run with ``python -m vlxseek_ros.managed_detector_node --ros-args ...`` or
``vlxseek_detector --managed --ros-args ...`` (the launch file does this for ``managed:=true``).

Transitions (``ros2 lifecycle set /vlxseek_detector <transition>``):

* ``configure``: loads the models named by the parameters and (parameter ``warmup``) runs one
  inference on a synthetic frame; a failure (missing or corrupt checkpoint or proposal model,
  bad parameters, failed warm-up) is logged naming what failed and the node stays
  ``unconfigured`` (transition result FAILURE). Shutdown (SIGINT/SIGTERM) during loading or
  warm-up interrupts it the same way, and the process exits 0.
* ``activate``: creates the publishers, the ``image`` subscription, ``~/query_regions`` and the
  timers (standing query, ``~/status``); the node serves as :class:`DetectorNode` does. After
  shutdown began it creates nothing (FAILURE).
* ``deactivate``: lets a running inference finish (up to ``busy_timeout_s``), answers the calls
  already taken and those still queued (``busy: ...``), and destroys those interfaces; the model
  stays loaded, so ``activate`` is immediate.
* Outside ``active`` a request that reaches the node (in-process) is answered ``busy: the node
  is not configured ...`` / ``... not active ...``. Before configure ``standing_task`` can only
  be checked against every vlxseek_core task; ``configure`` checks it against the loaded
  model family's tasks and fails (unloading the model) naming them.
* ``cleanup``: frees the model (and the CUDA cache when CUDA is in use); ``shutdown`` likewise.

Parameter ``autostart`` (bool, default false, read-only): configure and activate at start-up
(the portable alternative to launch-side autostart, which differs between distros).
"""
from __future__ import annotations

if __name__ == "__main__":  # a node process: record SIGINT/SIGTERM before the imports below
    from vlxseek_ros import stop_signals
    stop_signals.install(exit_at_once=True)  # until run_node: nothing to clean up

import gc
import sys
from typing import Any, List, Optional

from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.logging import LoggingSeverity

from vlxseek_ros.serving import DetectorServing
from vlxseek_ros.node_process import process_logger, run_node
from vlxseek_ros.parameters import MANAGED_PARAMETERS, NODE_NAME
from vlxseek_ros.startup import (StartupError, StartupInterrupted, declare_parameters,
                                 load_interruptibly, startup_guard)


NOT_CONFIGURED = "the node is not configured (no model loaded); configure and activate it"
NOT_ACTIVE = "the node is not active; activate it"
"""Why requests are refused outside ``active`` (answered ``busy: <reason>``, as calls that
arrive while the node deactivates are)."""


class ManagedDetectorNode(DetectorServing, LifecycleNode):
    """Lifecycle version of :class:`vlxseek_ros.detector_node.DetectorNode`.

    Args:
        pipeline: a pipeline to use on every ``configure`` instead of loading one (tests).
        **kwargs: passed to :class:`rclpy.lifecycle.LifecycleNode`.

    Raises:
        StartupError: invalid runtime parameters (the node is destroyed).
    """

    def __init__(self, pipeline: Any = None, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self._given_pipeline = pipeline
        with startup_guard(self):
            params = self._declare_parameters()
            autostart = declare_parameters(self, MANAGED_PARAMETERS)["autostart"]
            self._init_serving(params)
        self._closing = NOT_CONFIGURED
        if autostart and not self._stopping():
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS \
                    and not self._stopping():
                self.trigger_activate()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Load the model and warm it up; on failure log why and stay unconfigured.

        Both steps are interruptible: once shutdown is requested the transition fails at once
        (logged on the console only) and the loading is abandoned. The runtime parameters are
        checked again once the model is loaded: before, ``standing_task`` could only be checked
        against every task of vlxseek_core, not against the model family's (the plain node
        loads first and so fails at start-up the same way).
        """
        try:
            self._pipe = (self._given_pipeline if self._given_pipeline is not None
                          else load_interruptibly(self._params, self._stopping, self._log_step))
            with self._state_lock:
                bad = self._check_runtime(self._runtime)
            if bad:
                raise StartupError(f"{bad} (model '{self._params['model_path']}')")
            self._warm_up()
        except StartupError as exc:
            self._unload()
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        except StartupInterrupted as exc:
            self._pipe = None
            process_logger().info(f"configure interrupted: shutdown requested {exc}")
            # rclpy now fails to publish the transition (the context is gone) and says so through
            # this node's logger, whose /rosout is gone too: the node is going away, quiet it
            self.get_logger().set_level(LoggingSeverity.FATAL)
            return TransitionCallbackReturn.FAILURE
        self._closing = NOT_ACTIVE
        self.get_logger().info(f"configured: model '{self._params['model_path']}' loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Create the interfaces and serve (nothing is created once shutdown began)."""
        try:
            self._create_interfaces()
        except StartupInterrupted as exc:
            process_logger().info(f"activate interrupted: shutdown requested {exc}")
            self.get_logger().set_level(LoggingSeverity.FATAL)  # as in on_configure
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop serving; the model stays loaded."""
        with self._state_lock:
            wait_s = self._runtime.busy_timeout_s
        self._destroy_interfaces(wait_s)
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Free the model (and the CUDA cache)."""
        self._unload()
        self._closing = NOT_CONFIGURED
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop serving and free the model."""
        self._destroy_interfaces(0.0)
        self._unload()
        return TransitionCallbackReturn.SUCCESS

    def _unload(self) -> None:
        """Drop the pipeline (under the model lock) and free its memory."""
        with self._model_lock:
            self._pipe = None
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def main(args: Optional[List[str]] = None) -> int:
    """Run the managed node until shutdown; returns the exit status (1 = bad parameters).

    A model that fails to load does not end the process: the node stays unconfigured.
    """
    return run_node(ManagedDetectorNode, args)


if __name__ == "__main__":
    sys.exit(main())
