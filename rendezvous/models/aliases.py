"""Following a registry alias: a background check that hands a new version to the scorer.

MLflow does not push alias moves, so the follower polls at most every ``every_s`` seconds
(injectable clock); the check and the load run in the background (a daemon thread by default),
so a slow or unreachable registry never stalls scoring.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from rendezvous.models.loaded import _Loaded
from rendezvous.models.registry import _Source

log = logging.getLogger(__name__)


class _AliasFollower:
    """Checks an alias in the background; hands a newly loaded version to the scoring thread."""

    def __init__(
        self,
        source: _Source,
        every_s: float,
        clock: Callable[[], float],
        run_in_background: Callable[[Callable[[], None]], object] | None,
    ) -> None:
        self.source = source
        self.every_s = every_s
        self.clock = clock
        self.run = run_in_background or _daemon_thread
        self.last_check = clock()
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._busy = False
        self._ready: _Loaded | None = None
        self._closed = False

    def poll(self, current_version: str) -> _Loaded | None:
        now = self.clock()
        start = False
        with self._lock:
            if not self._busy and self._ready is None and now - self.last_check >= self.every_s:
                self._busy, start, self.last_check = True, True, now
        if start:
            self.run(lambda: self._check(current_version))
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def _check(self, current_version: str) -> None:
        loaded = None
        try:
            version = self.source.current_version()
            if version != current_version:
                loaded = self.source.load(version)
            self.last_error = None
        except Exception as exc:
            self.last_error = str(exc)
            log.warning(
                "model %s: keeping version %s; alias check failed: %s",
                self.source.model,
                current_version,
                exc,
            )
        with self._lock:
            self._busy = False
            if loaded is not None and self._closed:
                loaded.discard()
            elif loaded is not None:
                self._ready = loaded

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._ready is not None:
                self._ready.discard()
                self._ready = None


def _daemon_thread(task: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=task, name="rdv-alias-check", daemon=True)
    thread.start()
    return thread
