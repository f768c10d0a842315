"""shopcast's topics: which ones, with how many partitions and which config, and creating them.

Topics are created up front (``shopcast topics create``), never auto-created: a broker that
auto-creates gives a topic its own default partition count, and a Faust table whose changelog
has a different partition count from its source topic crashes with ``PartitionsMismatch``.

The worker's window table is the Faust table named :data:`WINDOW_TABLE`; Faust names its
changelog ``{app_id}-{table}-changelog`` and co-partitions it with the events topic, so it is
created here with the events topic's partition count and ``cleanup.policy=compact``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.kafka_config import bootstrap_list, client_kwargs
from streams.settings import Settings

WINDOW_TABLE = "windows"
TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
PARTITIONS_ADVICE = (
    "shopcast's topics must have SHOPCAST_PARTITIONS partitions: a Faust table over topics with "
    "different partition counts crashes with PartitionsMismatch. Set SHOPCAST_PARTITIONS to the "
    "existing count, or delete those topics (losing their data) and create them again.")

Status = Literal["created", "exists", "mismatch", "error"]


class TopicsError(RuntimeError):
    """Topics could not be created or do not match what shopcast needs; the message says which."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic shopcast needs: its name, partition count, replication and topic config."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)
    purpose: str = ""


@dataclass(frozen=True)
class TopicResult:
    """What :func:`create_topics` found or did for one topic."""

    spec: TopicSpec
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the topic exists now as shopcast needs it (created or already there)."""
        return self.status in ("created", "exists")


def changelog_topic(settings: Settings) -> str:
    """The window table's changelog topic as Faust names it: ``{app_id}-windows-changelog``."""
    return f"{settings.app_id}-{WINDOW_TABLE}-changelog"


def rekey_topic(settings: Settings) -> str:
    """The internal topic for events whose Kafka key is not their user id (re-sent keyed)."""
    return f"{settings.events_topic}.rekeyed"


def topic_specs(settings: Settings,
                changelog_config: Mapping[str, str] | None = None) -> list[TopicSpec]:
    """Every topic shopcast needs under these settings.

    The events, erasure and changelog topics are keyed by user id and must be co-partitioned
    (same partition count), since one worker owns a user's events, window and erasure requests.
    ``changelog_config`` adds to or overrides the changelog's topic config (tests use it to make
    compaction quick).
    """
    n, rf = settings.partitions, settings.replication_factor
    changelog = {"cleanup.policy": "compact", **(changelog_config or {})}
    return [
        TopicSpec(settings.events_topic, n, rf, purpose="shop events in (key = user_id)"),
        TopicSpec(rekey_topic(settings), n, rf,
                  purpose="events re-keyed by user_id (internal; for producers that key "
                          "otherwise)"),
        TopicSpec(settings.predictions_topic, n, rf, purpose="predictions out (key = user_id)"),
        TopicSpec(settings.dlq_topic, n, rf, purpose="dead letters: rejected events + reason"),
        TopicSpec(settings.erasure_topic, n, rf, purpose="erasure requests (key = user_id)"),
        TopicSpec(settings.audit_topic, n, rf, purpose="erasure confirmations"),
        TopicSpec(changelog_topic(settings), n, rf, changelog,
                  purpose="window table changelog (compacted)"),
    ]


async def create_topics(settings: Settings, *,
                        changelog_config: Mapping[str, str] | None = None,
                        timeout: float = 30.0) -> list[TopicResult]:
    """Create the missing topics of :func:`topic_specs`; check the ones that exist.

    Idempotent. An existing topic with another partition count (or a changelog that is not
    compacted) is reported as ``mismatch`` with a message saying what to do; nothing is
    changed on it. Raises :class:`TopicsError` when the broker cannot be reached in ``timeout``.
    """
    specs = topic_specs(settings, changelog_config)
    async with _admin(settings, timeout) as admin:
        return await asyncio.wait_for(_create(admin, specs), timeout)


async def ensure_topics(settings: Settings, *,
                        changelog_config: Mapping[str, str] | None = None,
                        timeout: float = 30.0) -> list[TopicResult]:
    """Like :func:`create_topics`, but raise :class:`TopicsError` unless every topic is usable."""
    results = await create_topics(settings, changelog_config=changelog_config, timeout=timeout)
    bad = [r for r in results if not r.ok]
    if bad:
        advice = f"\n{PARTITIONS_ADVICE}" if any(
            "SHOPCAST_PARTITIONS" in r.detail for r in bad) else ""
        raise TopicsError("topics not usable:\n  " + "\n  ".join(
            f"{r.spec.name}: {r.detail}" for r in bad) + advice)
    return results


async def list_topics(settings: Settings, *, timeout: float = 30.0) -> dict[str, int]:
    """Every topic on the broker (internal ones included) with its partition count."""
    async with _admin(settings, timeout) as admin:
        described = await asyncio.wait_for(admin.describe_topics(), timeout)
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def delete_topics(settings: Settings, names: Iterable[str] = (),
                        prefixes: Iterable[str] = (), *, timeout: float = 30.0) -> list[str]:
    """Delete the named topics and every topic starting with one of ``prefixes``, if present.

    Returns the names deleted (none present is not an error).
    """
    wanted, starts = set(names), tuple(prefixes)
    async with _admin(settings, timeout) as admin:
        found = [n for n in await asyncio.wait_for(admin.list_topics(), timeout)
                 if n in wanted or (starts and n.startswith(starts))]
        if found:
            await asyncio.wait_for(admin.delete_topics(found), timeout)
    return found


@contextlib.asynccontextmanager
async def _admin(settings: Settings, timeout: float) -> AsyncIterator[Any]:
    """A started aiokafka admin client; connection failures become :class:`TopicsError`."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        yield admin
    except (TimeoutError, OSError, KafkaError) as exc:
        raise TopicsError(_unreachable(settings, exc)) from exc
    finally:
        await admin.close()


async def _create(admin: Any, specs: Sequence[TopicSpec]) -> list[TopicResult]:
    from aiokafka.admin import NewTopic

    # Only ask about topics that exist: some brokers (tansu) auto-create a topic whose
    # metadata is requested, with their own partition count.
    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    results: dict[str, TopicResult] = {}
    if missing:
        response = await admin.create_topics([
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config))
            for s in missing])
        for error in response.to_object()["topic_errors"]:
            spec = next(s for s in missing if s.name == error["topic"])
            code, message = error["error_code"], error["error_message"]
            if code == 0:
                results[spec.name] = TopicResult(
                    spec, "created", f"{spec.partitions} partitions, replication "
                    f"{spec.replication_factor}" + _config_text(spec.config))
            elif code == TOPIC_EXISTS:  # created meanwhile by someone else: check it below
                existing.add(spec.name)
            else:
                results[spec.name] = TopicResult(spec, "error", _error_text(spec, code, message))
    created = [name for name, result in results.items() if result.status == "created"]
    if created:  # return only once clients can use them (the broker's metadata catches up)
        await _describe(admin, created)
    present = [s for s in specs if s.name in existing and s.name not in results]
    if present:
        described = await _describe(admin, [s.name for s in present])
        policies = await _cleanup_policies(admin, [s.name for s in present if s.config])
        for spec in present:
            results[spec.name] = _check_existing(spec, described.get(spec.name), policies)
    return [results[s.name] for s in specs]


async def _describe(admin: Any, names: Sequence[str], patience: float = 10.0
                    ) -> dict[str, Any]:
    """Metadata of topics known to exist.

    Waits while the broker's cache still lags behind the controller: a topic created a moment
    ago reads as unknown, or without a leader.
    """
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        described = {t["topic"]: t for t in await admin.describe_topics(list(names))}
        lagging = [t for t in described.values() if t["error_code"] in (3, 5)
                   or any(p["leader"] < 0 for p in t["partitions"])]
        if not lagging or asyncio.get_running_loop().time() > deadline:
            return described
        await asyncio.sleep(0.2)


def _check_existing(spec: TopicSpec, described: Mapping[str, Any] | None,
                    policies: Mapping[str, str]) -> TopicResult:
    if described is None or described["error_code"] != 0:
        code = described["error_code"] if described else "none"
        return TopicResult(spec, "error", f"exists but cannot be described (error {code})")
    partitions = len(described["partitions"])
    if partitions != spec.partitions:
        return TopicResult(spec, "mismatch", (
            f"exists with {partitions} partitions, but SHOPCAST_PARTITIONS={spec.partitions}"))
    wanted_policy = spec.config.get("cleanup.policy")
    policy = policies.get(spec.name)
    if wanted_policy and policy and policy != wanted_policy:
        return TopicResult(spec, "mismatch", (
            f"exists with cleanup.policy={policy}, needs cleanup.policy={wanted_policy}; fix "
            f"it with: kafka-configs --alter --entity-type topics --entity-name {spec.name} "
            f"--add-config cleanup.policy={wanted_policy}"))
    replicas = {len(p["replicas"]) for p in described["partitions"]}
    detail = f"{partitions} partitions"
    if replicas and replicas != {spec.replication_factor}:
        detail += (f"; note: replication {'/'.join(map(str, sorted(replicas)))}, "
                   f"configured {spec.replication_factor}")
    if wanted_policy and policy is None:
        detail += "; cleanup.policy could not be read from this broker"
    return TopicResult(spec, "exists", detail)


async def _cleanup_policies(admin: Any, names: Sequence[str]) -> dict[str, str]:
    """cleanup.policy of each topic; empty where the broker does not answer DescribeConfigs."""
    if not names:
        return {}
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    try:
        responses = await admin.describe_configs([
            ConfigResource(ConfigResourceType.TOPIC, name, {"cleanup.policy": None})
            for name in names])
    except Exception:  # tansu drops the connection on DescribeConfigs: the policy stays unknown
        return {}
    policies = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == "cleanup.policy" and resource["error_code"] == 0:
                    policies[resource["resource_name"]] = entry["config_value"]
    return policies


def _config_text(config: Mapping[str, str]) -> str:
    return "".join(f", {k}={v}" for k, v in config.items())


def _error_text(spec: TopicSpec, code: int, message: str | None) -> str:
    if code == 38:  # INVALID_REPLICATION_FACTOR
        return (f"cannot be created with replication {spec.replication_factor}: {message} "
                "Set SHOPCAST_REPLICATION_FACTOR to at most the number of brokers.")
    return f"cannot be created (Kafka error {code}): {message}"


def _unreachable(settings: Settings, exc: BaseException) -> str:
    servers = ",".join(bootstrap_list(settings))
    reason = str(exc) or type(exc).__name__
    return (f"cannot reach Kafka at {servers} ({settings.security_protocol}): {reason}. "
            "Is the broker running, and are SHOPCAST_BOOTSTRAP_SERVERS and the security "
            "settings right?")
