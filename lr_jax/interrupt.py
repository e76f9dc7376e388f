"""Stopping a run cleanly: SIGTERM and SIGINT become a stop request that the step loop honours between two train
steps, at a step every process agrees on (JAX's preemption sync point when there are several); `Interrupted`
says where the run stopped.

One process: Python handlers record the request. Several processes (`jax.distributed` with its preemption
service): JAX's own SIGTERM handler (installed by `jax.distributed.initialize`) tells the coordination service,
which picks the step at which every process stops (`multihost_utils.reached_preemption_sync_point`, orbax's
preemption mechanism too); SIGINT is forwarded to it as SIGTERM. After the first signal a second one of either
kind ends the process at once, by the signal's default action (exit status 128 + signal number)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Optional

# sysexits.h EX_TEMPFAIL ("temporary failure; the user is invited to retry"): the run stopped on request after
# saving, and the same command resumes it. Apart from 2 (bad input), 3 (diverged), 74 (a write failed) and from
# 128 + N (killed by signal N, nothing saved since the last checkpoint).
EXIT_STATUS = 75

AGREED = "a stop request to one of the processes"  # the reason where this process received no signal itself
_request = {"signal": None, "checks": 0}  # the first signal received (its name); stop checks made so far


class Interrupted(Exception):
    """Training stopped on request. `step` is where generation `generation` stopped (None: before its training
    began in this invocation), `checkpoint` the folder of the training state saved there (None: nothing new
    needed saving, or there was no checkpoint folder); `finished` how many generations were complete when it
    stopped. The step loop knows the step, the chain adds the generation and the count."""

    def __init__(self, reason: str, step: Optional[int] = None, total_steps: Optional[int] = None,
                 checkpoint: Optional[str] = None, generation: Optional[int] = None, finished: int = 0):
        super().__init__(reason)
        self.reason, self.step, self.total_steps, self.checkpoint = reason, step, total_steps, checkpoint
        self.generation, self.finished = generation, finished

    def __str__(self) -> str:
        where = (f"before training generation {self.generation}" if self.step is None
                 else f"in generation {self.generation} at step {self.step} of {self.total_steps}")
        saved = (f"its training state is saved in {self.checkpoint}" if self.checkpoint
                 else "nothing new needed saving" if not self.step
                 else "its training state was not saved (no checkpoint folder)")
        done = self.finished
        return (f"stopped by {self.reason} {where}; {saved}; {done} generation{'s' * (done != 1)} finished. "
                f"Run the same command again to resume (exit status {EXIT_STATUS})")


def _mode() -> str:
    """'single' (one process), 'coordinated' (several, with JAX's preemption service, which then owns SIGTERM) or
    'uncoordinated' (several without it, jax_enable_preemption_service off: no process may stop alone, so
    signals keep their usual effect)."""
    import jax

    if jax.process_count() == 1:
        return "single"
    from jax._src import distributed as jax_distributed  # the service's presence is not exposed publicly

    return "coordinated" if jax_distributed.global_state.preemption_sync_manager is not None else "uncoordinated"


def requested() -> Optional[str]:
    """The name of the first stop signal this process received (since the handlers were installed), or None."""
    return _request["signal"]


def request(name: str) -> None:
    """Records a stop request as a signal would (for tests and programmatic stops)."""
    _request["signal"] = _request["signal"] or name


def clear() -> None:
    """Forgets a stop request (the handlers do it when they are removed)."""
    _request["signal"] = None


def should_stop() -> bool:
    """Whether to stop before the next train step. Every process must call it at the same points of the same
    control flow (each call counts, and with several processes the count is what they agree on)."""
    _request["checks"] += 1
    mode = _mode()
    if mode == "coordinated":
        from jax.experimental import multihost_utils

        return multihost_utils.reached_preemption_sync_point(_request["checks"])
    return mode == "single" and _request["signal"] is not None


def _say(text: str) -> None:
    """Writes a line to stderr from a signal handler (os.write: no buffered stream is re-entered)."""
    try:
        os.write(2, (text + "\n").encode())
    except OSError:
        pass


def _on_signal(signum, frame, forward_to_jax: bool = False) -> None:
    """The first SIGTERM or SIGINT: records it, lets the next one end the process, tells the user (and JAX)."""
    name = signal.Signals(signum).name
    request(name)
    for own in (signal.SIGTERM, signal.SIGINT):  # a second signal now takes the default action: exit at once
        if own != signal.SIGTERM or not forward_to_jax:
            signal.signal(own, signal.SIG_DFL)
    _say(f"{name} received: finishing the current step, saving a checkpoint and stopping (send it again to "
         f"stop at once, without saving)")
    if forward_to_jax:  # JAX's handler notices SIGTERM and the coordination service tells every process
        signal.raise_signal(signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals():
    """Within: SIGTERM and SIGINT request a clean stop (see the module docstring); on exit the previous
    handlers are back and any request is forgotten. Only the main thread can install handlers, and several
    processes without JAX's preemption service cannot agree on a step: there this changes nothing."""
    mode = _mode()
    if threading.current_thread() is not threading.main_thread() or mode == "uncoordinated":
        yield
        return
    coordinated = mode == "coordinated"
    handled = (signal.SIGINT,) if coordinated else (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    clear()
    try:
        for signum in handled:
            signal.signal(signum, lambda s, f: _on_signal(s, f, forward_to_jax=coordinated))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        clear()
