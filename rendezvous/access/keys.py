"""API keys: making one, what is kept of it, and the ring of every key a proxy knows.

A key reads ``rdv_<key_id>_<secret>``: ``key_id`` (12 hex digits) names it in lists and
revocations and is no secret; ``secret`` is 32 random bytes from :mod:`secrets`
(URL-safe base64). What is stored, on the ``rdv.api-keys`` topic, is the SHA-256 of the whole
key, never the key.

SHA-256 and not a password KDF (bcrypt, scrypt, Argon2): a KDF is slow on purpose, to make
guessing a *low-entropy* password from its hash costly. A key here is 256 random bits, which no
number of guesses finds, slow hash or fast; a KDF would add only its cost, milliseconds of CPU
on every request. GitHub's and Stripe's API tokens are checked the same way. Looking a key up
by its digest is also safe against timing: where two digests start to differ says nothing
about the key that was sent.

Pure: no Kafka, no clock (times are passed in).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from rendezvous.records import ApiKey, Quota
from rendezvous.topics import MAX_QUOTA_PERIOD_MS

PREFIX = "rdv_"
ALL_SERVICES = "*"
KEY_ID_RE = re.compile(r"[0-9a-f]{12}")
_KEY_RE = re.compile(r"rdv_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


def digest(key: str) -> str:
    """What is stored of ``key``: its SHA-256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The key id inside a key of this project's format, or None."""
    match = _KEY_RE.fullmatch(key)
    return None if match is None else match.group(1)


def quota(requests: int, period_ms: int) -> Quota:
    """A budget of ``requests`` per window of ``period_ms`` (epoch time cut into such windows)."""
    if requests < 0:
        raise ValueError(f"a quota is a number of requests >= 0, got {requests}")
    if not 1000 <= period_ms <= MAX_QUOTA_PERIOD_MS:
        raise ValueError(
            f"a quota period is from 1 s to {MAX_QUOTA_PERIOD_MS // 86_400_000} days, got "
            f"{period_ms} ms"
        )
    return {"requests": requests, "period_ms": period_ms}


def new_key(
    name: str,
    services: Iterable[str],
    *,
    created_by: str,
    created_ms: int,
    quota: Quota | None = None,
) -> tuple[str, ApiKey]:
    """A new key and the record that stores it: show the key once, publish the record."""
    scope = sorted(set(services))
    if not scope:
        raise ValueError("a key needs at least one service (or '*' for every service)")
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record: ApiKey = {
        "key_id": key_id,
        "digest": digest(key),
        "name": name,
        "services": scope,
        "created_ms": created_ms,
        "created_by": created_by,
        "revoked_ms": None,
        "revoked_by": None,
        "quota": quota,
    }
    return key, record


def revoked(record: ApiKey, *, revoked_by: str, revoked_ms: int) -> ApiKey:
    """``record`` as revoked now; a key revoked before keeps its first revocation."""
    if record["revoked_ms"] is not None:
        return record
    return {**record, "revoked_ms": revoked_ms, "revoked_by": revoked_by}


def allows(record: ApiKey, service: str) -> bool:
    """Whether the key of ``record`` may call ``service`` (revocation is not looked at)."""
    services = record["services"]
    return service in services or ALL_SERVICES in services


def quota_text(record: ApiKey, unit: str = "requests") -> str:
    """``10000 requests per 1d`` (``unit``: ``tokens`` when a service of the key's scope gives
    its models quota weights, see :mod:`rendezvous.access.cost`), or ``no quota``."""
    q = record["quota"]
    return "no quota" if q is None else f"{q['requests']} {unit} per {period_text(q['period_ms'])}"


def period_text(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def scope_text(record: ApiKey) -> str:
    services = record["services"]
    return "every service" if ALL_SERVICES in services else ", ".join(services)


class KeyRing:
    """Every key known, by id and by digest; the latest record of a key id wins."""

    def __init__(self, records: Iterable[ApiKey] = ()) -> None:
        self.by_id: dict[str, ApiKey] = {}
        self.by_digest: dict[str, ApiKey] = {}
        for record in records:
            self.apply(record["key_id"], record)

    def apply(self, key_id: str, record: ApiKey | None) -> None:
        """The latest record of ``key_id``; None (a tombstone) forgets the key."""
        old = self.by_id.pop(key_id, None)
        if old is not None:
            self.by_digest.pop(old["digest"], None)
        if record is not None:
            self.by_id[key_id] = record
            self.by_digest[record["digest"]] = record

    def find(self, key: str) -> ApiKey | None:
        """The record of ``key`` (revoked or not), or None for a key never made here."""
        return self.by_digest.get(digest(key))

    def __len__(self) -> int:
        return len(self.by_id)
