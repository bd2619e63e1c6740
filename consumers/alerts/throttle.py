"""No-spam state in Redis, shared by every notifier instance.

Three mechanisms, each atomic on the Redis server so that concurrent
instances agree without coordinating:

* **Dedup** — ``SET NX EX`` on (rule, channel, recipient, lot/wafer): the first
  alert for a wafer and rule within ``dedup_ttl_s`` claims the key, later ones
  (a re-test, a re-scored wafer, the same event seen by two instances) are
  suppressed. A failed delivery releases its claim so the next event for that
  wafer may try again.
* **Rate limit** — a fixed window per (channel, recipient): ``INCR`` and
  ``PEXPIRE`` on first use, in one Lua script. Within a window the first
  ``max_alerts`` are sent.
* **Delivery lease** — ``SET NX PX`` on the alert id with a random token while
  one instance works on an alert, so an alert left ``pending`` by a crashed
  instance is resumed by the replay but never sent by two live ones at once.
* **Digest** — an alert over the limit is appended to a Redis list for that
  (channel, recipient) in the same script, and the list is scheduled (sorted
  set scored by the window's end, on the Redis clock) for flushing.
  :meth:`Throttle.take_due_digests` hands each due list to exactly one caller:
  removal from the schedule and reading the list happen in one script.

Keys assume a single Redis (or one hash slot): the scripts touch several keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from consumers.alerts.rules import Target, ThrottleSettings
from consumers.alerts.subject import AlertSubject

_ADMIT_LUA = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
if n <= tonumber(ARGV[1]) then
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[3])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], 'NX', now_ms + ttl, ARGV[4])
return 0
"""

_DUE_LUA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_TAKE_LUA = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return {}
end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return items
"""


@dataclass(frozen=True)
class Digest:
    """Alerts held back for one (channel, recipient) whose window has closed."""

    channel: str
    recipient: str
    items: list[dict[str, Any]]


def _text(value: bytes | str) -> str:
    """Redis replies are bytes unless the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def _tag(*parts: str) -> str:
    """Unambiguous, readable key component (names may contain ':' or '/')."""
    return json.dumps(parts, separators=(",", ":"))


class Throttle:
    """Dedup, rate limit and digest queue for one key prefix."""

    def __init__(self, redis: Redis, settings: ThrottleSettings, prefix: str) -> None:
        self._redis = redis
        self._settings = settings
        self._prefix = prefix
        self._admit = redis.register_script(_ADMIT_LUA)
        self._due = redis.register_script(_DUE_LUA)
        self._take = redis.register_script(_TAKE_LUA)
        self._release = redis.register_script(_RELEASE_LUA)

    @property
    def _schedule_key(self) -> str:
        return f"{self._prefix}:digest-due"

    def _dedup_key(self, subject: AlertSubject, target: Target) -> str:
        return f"{self._prefix}:dedup:" + _tag(
            target.rule, target.channel, target.recipient, subject.wafer_key
        )

    async def claim(self, subject: AlertSubject, target: Target, alert_id: int) -> bool:
        """True if no *other* alert for this wafer, rule and target was claimed within the TTL.

        The claim records the alert id, so an alert resumed after a crash
        finds its own claim and goes out instead of muting itself.
        """
        ttl_ms = int(self._settings.dedup_ttl_s * 1000)
        key = self._dedup_key(subject, target)
        if await self._redis.set(key, str(alert_id), nx=True, px=ttl_ms):
            return True
        owner = await self._redis.get(key)
        return owner is not None and _text(owner) == str(alert_id)

    async def lease(self, alert_id: int, token: str) -> bool:
        """Own ``alert_id`` for ``delivery_lease_s`` unless another instance does."""
        ttl_ms = int(self._settings.delivery_lease_s * 1000)
        return bool(await self._redis.set(self._lease_key(alert_id), token, nx=True, px=ttl_ms))

    async def end_lease(self, alert_id: int, token: str) -> None:
        """Give up the lease, only if it is still ours (it may have lapsed and moved on)."""
        await self._release(keys=[self._lease_key(alert_id)], args=[token])

    def _lease_key(self, alert_id: int) -> str:
        return f"{self._prefix}:lease:{alert_id}"

    async def release(self, subject: AlertSubject, target: Target) -> None:
        """Forget a claim whose delivery failed, so a later event is not muted by it."""
        await self._redis.delete(self._dedup_key(subject, target))

    async def admit(self, target: Target, digest_item: dict[str, Any]) -> bool:
        """True: send now. False: over the limit, ``digest_item`` was queued for the digest."""
        limit = self._settings.limit_for(target.channel)
        member = _tag(target.channel, target.recipient)
        result = await self._admit(
            keys=[
                f"{self._prefix}:rate:{member}",
                f"{self._prefix}:digest:{member}",
                self._schedule_key,
            ],
            args=[limit.max_alerts, int(limit.window_s * 1000), json.dumps(digest_item), member],
        )
        return int(result) == 1

    async def take_due_digests(self) -> list[Digest]:
        """Claim every digest whose window has closed; each is returned to one caller only."""
        digests: list[Digest] = []
        for raw in await self._due(keys=[self._schedule_key]):
            member = _text(raw)
            items = await self._take(
                keys=[self._schedule_key, f"{self._prefix}:digest:{member}"], args=[member]
            )
            if items:
                channel, recipient = json.loads(member)
                digests.append(Digest(channel, recipient, [json.loads(i) for i in items]))
        return digests
