"""The API key check on the proxy's request path.

A :class:`Gate` holds the :class:`~rendezvous.access.keys.KeyRing` that the replica's key log
follower keeps current, and answers each request in O(1): the SHA-256 of a key sent before is
cached (an LRU of ``cache_size``), and the record is one dict lookup by digest. It raises the
proxy's errors (401, 403, 503 before the keys are read); the app turns them into responses.
Health, readiness, metrics and the API document do not pass through it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache

from rendezvous.access import keys
from rendezvous.access.log import Following, KeyLog
from rendezvous.proxy.errors import Forbidden, KeysUnavailable, Unauthorized
from rendezvous.records import ApiKey

MAX_KEY_CHARS = 256  # longer is no key of ours, and is not hashed


class Gate:
    def __init__(self, *, topic: str, cache_size: int = 10_000) -> None:
        self.topic = topic
        self.ring = keys.KeyRing()
        self.ready = False
        self.problem = f"API keys not read yet from {topic}"
        self._digests: LRUCache[str, str] = LRUCache(cache_size)

    # -- from the key log (on the event loop)
    def follow(self, log: KeyLog, loop: asyncio.AbstractEventLoop) -> Following:
        """Follow ``log`` into this gate; what it reports is applied on ``loop``, whose thread
        this is called on."""
        loop_thread = threading.get_ident()

        def on_loop(fn: Callable[..., None]) -> Callable[..., None]:
            def call(*args: Any) -> None:
                if threading.get_ident() == loop_thread:
                    fn(*args)
                else:
                    loop.call_soon_threadsafe(fn, *args)

            return call

        return log.follow(on_loop(self.apply), on_loop(self.caught_up), on_loop(self.report))

    def apply(self, key_id: str, record: ApiKey | None) -> None:
        self.ring.apply(key_id, record)

    def caught_up(self) -> None:
        self.ready = True

    def report(self, problem: str) -> None:
        self.problem = problem

    # -- per request
    def check(self, authorization: str | None, service: str) -> ApiKey:
        """The valid key of an ``Authorization`` header, allowed to call ``service``."""
        record = self.authenticate(authorization)
        self.scope(record, service)
        return record

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The valid key of an ``Authorization`` header, whatever its services."""
        if not self.ready:
            raise KeysUnavailable(
                f"this proxy replica has not read the API keys yet ({self.problem}); retry "
                f"shortly or on another replica"
            )
        if authorization is None:
            raise Unauthorized(
                "no API key: send 'Authorization: Bearer <key>' (make a key with "
                "`rendezvous keys create`)"
            )
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_CHARS:
            raise Unauthorized(
                "the Authorization header is not 'Bearer <key>'; send the key after 'Bearer '",
                error="invalid_token",
            )
        record = self.ring.by_digest.get(self._digest(key))
        if record is None:
            raise Unauthorized(
                "the API key is not known to this deployment; check it was copied whole, or "
                "make one with `rendezvous keys create`",
                error="invalid_token",
            )
        if record["revoked_ms"] is not None:
            raise Unauthorized(
                f"API key {record['key_id']} ({record['name']}) was revoked; ask for a new key",
                error="invalid_token",
            )
        return record

    def scope(self, record: ApiKey, service: str | None) -> None:
        """Refuse a key not allowed to call ``service`` (None: a request of no known service,
        which has nothing to check)."""
        if service is not None and not keys.allows(record, service):
            raise Forbidden(
                f"API key {record['key_id']} ({record['name']}) may call "
                f"{keys.scope_text(record)}, not {service[:64]!r}; use a key for that service "
                f"(`rendezvous keys create --service {service[:64]}`)"
            )

    def _digest(self, key: str) -> str:
        cache = self._digests
        found = cache.get(key)
        if found is None:
            found = cache[key] = keys.digest(key)
        return found
