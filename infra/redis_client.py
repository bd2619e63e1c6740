"""The asyncio Redis client shared by services (dedup, rate limits, caches)."""

from __future__ import annotations

import redis.asyncio as aioredis

from infra.errors import DependencyUnavailable
from infra.settings import RedisSettings


def create_redis(settings: RedisSettings) -> aioredis.Redis:
    """A client for the configured URL (connections are opened lazily)."""
    url = settings.url.get_secret_value()
    if not url:
        raise DependencyUnavailable("redis", "no URL configured (run `waferstream stack up`)")
    return aioredis.from_url(url, health_check_interval=30, socket_connect_timeout=5)
