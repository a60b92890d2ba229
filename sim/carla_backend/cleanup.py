"""Leave the CARLA server as we found it: every actor we spawned destroyed and the
world's settings restored, on normal exit, exception, Ctrl-C and SIGTERM.

A server left in synchronous mode with nobody ticking freezes for every other client,
and leaked actors pile up over resets, so this is not optional. Python runs ``finally``
blocks and ``atexit`` on exceptions and Ctrl-C (KeyboardInterrupt) but not on SIGTERM's
default action; while a backend is open, SIGTERM is turned into ``SystemExit`` unless
someone (rclpy, a launcher) already handles it.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

import carla

log = logging.getLogger(__name__)


class Closable(Protocol):
    def close(self) -> None: ...


_open: weakref.WeakSet = weakref.WeakSet()
_sigterm_installed = False


def register(backend: Closable) -> None:
    """Close ``backend`` at interpreter exit and on SIGTERM if it is still open then."""
    global _sigterm_installed
    _open.add(backend)
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _raise_system_exit)
        _sigterm_installed = True


def unregister(backend: Closable) -> None:
    _open.discard(backend)


def _raise_system_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally, then atexit


@atexit.register
def _close_all() -> None:
    for backend in list(_open):
        try:
            backend.close()
        except Exception as exc:  # the server may be gone; report and go on with the rest
            log.error("closing the CARLA backend at exit failed: %s", exc)


def destroy_actors(client: Any, actors: Iterable[Any]) -> list[str]:
    """Stop sensors, then destroy all ``actors`` in one synchronous batch; the errors.

    Sensors are stopped first so that no callback runs on a half-destroyed actor.
    """
    actors = list(actors)
    for actor in actors:
        if actor.type_id.startswith("sensor.") and actor.is_listening():
            actor.stop()
    if not actors:
        return []
    responses = client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in actors])
    return [f"actor {a.id} ({a.type_id}): {r.error}" for a, r in zip(actors, responses) if r.error]
