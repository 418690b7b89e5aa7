"""What `formrelay check` asks Redis: does it answer, and would it keep what the relay answered `queued`?

The queue promises that a `202 queued` submission reaches the provider, even across a restart. In Redis that
holds only with persistence that covers every write (AOF; RDB snapshots lose what came after the last one) and
an eviction policy that never drops keys (`noeviction`: a full Redis refuses writes, which the relay answers
with 503, rather than silently deleting queued jobs or idempotency records).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RedisReport:
    where: str
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def where(url: str) -> str:
    """host:port/db of a redis URL, without the password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    return f"{parts.scheme}://{host}:{port}{parts.path or ''}"


def _config(client: Any, name: str) -> str | None:
    """CONFIG GET, or None where it is not allowed (managed Redis services often forbid CONFIG)."""
    try:
        value = client.config_get(name).get(name)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def inspect_redis(url: str, timeout: float = 3.0) -> RedisReport:
    """Connect to url; report an error when it does not answer, warnings when queued jobs could be lost."""
    import redis

    report = RedisReport(where(url))
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        _inspect(client, report)
    except redis.AuthenticationError:
        report.error = "Redis refused the credentials in redis_url"
    except redis.RedisError as exc:
        report.error = f"no answer from Redis ({exc.__class__.__name__}): is redis-server running, and is redis_url right?"
    finally:
        client.close()
    return report


def _inspect(client: Any, report: RedisReport) -> None:
    client.ping()
    persistence = client.info("persistence")
    memory = client.info("memory")
    aof = bool(persistence.get("aof_enabled"))
    save = _config(client, "save")
    fsync = _config(client, "appendfsync")
    policy = memory.get("maxmemory_policy") or _config(client, "maxmemory-policy") or "unknown"
    report.facts = {"appendonly": aof, "save": save, "appendfsync": fsync, "maxmemory_policy": policy,
                    "maxmemory": memory.get("maxmemory")}
    if not aof:
        if save:
            report.warnings.append(
                f"Redis persists only by RDB snapshots (save {save!r}): submissions answered 'queued' after the "
                "last snapshot are lost if Redis restarts. Set 'appendonly yes' (with 'appendfsync everysec' "
                "or 'always').")
        elif save == "":
            report.warnings.append(
                "Redis keeps nothing on disk (appendonly no, no RDB save): every submission answered 'queued' "
                "is lost when Redis restarts. Set 'appendonly yes' (with 'appendfsync everysec' or 'always').")
        else:
            report.warnings.append(
                "Redis has no append-only file (appendonly no) and its RDB settings cannot be read: submissions "
                "answered 'queued' may be lost when Redis restarts. Set 'appendonly yes'.")
    elif fsync == "no":
        report.warnings.append("Redis writes its append-only file with 'appendfsync no': the OS decides when "
                               "queued submissions reach the disk. Use 'everysec' or 'always'.")
    if policy != "noeviction":
        report.warnings.append(
            f"Redis maxmemory-policy is {policy!r}: when memory fills up it may delete queued submissions and "
            "idempotency records. Set 'maxmemory-policy noeviction' (a full Redis is then answered 503, "
            "nothing is dropped).")
