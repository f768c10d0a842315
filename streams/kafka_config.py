"""Settings → Kafka client configuration, in one place for every client in shopcast.

aiokafka producers, consumers and admin clients take :func:`client_kwargs`; the Faust app takes
:func:`faust_broker_settings`. Both read the same fields of :class:`~streams.settings.Settings`
(bootstrap servers, security protocol, SASL mechanism and credentials, TLS files), so a worker,
``shopcast topics``, replay, capture and the tests connect the same way.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from streams.settings import Settings, SettingsError

SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


def bootstrap_list(settings: Settings) -> list[str]:
    """The bootstrap servers as ``host:port`` strings.

    ``SHOPCAST_BOOTSTRAP_SERVERS`` is comma-separated; a ``kafka://`` prefix, as Faust writes
    broker URLs, is accepted and dropped.
    """
    servers = []
    for part in settings.bootstrap_servers.split(","):
        server = part.strip().removeprefix("kafka://")
        if not server:
            continue
        if ":" not in server:
            raise SettingsError(
                f"SHOPCAST_BOOTSTRAP_SERVERS: {server!r} has no port; write host:port, "
                "e.g. 127.0.0.1:9092")
        servers.append(server)
    if not servers:
        raise SettingsError(
            f"SHOPCAST_BOOTSTRAP_SERVERS: no server in {settings.bootstrap_servers!r}")
    return servers


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context for the SSL and SASL_SSL protocols (None for the others).

    Trusts ``SHOPCAST_SSL_CAFILE`` (or the system's CAs when unset), presents the client
    certificate ``SHOPCAST_SSL_CERTFILE``/``SHOPCAST_SSL_KEYFILE`` when set (mutual TLS), and
    checks the broker's host name unless ``SHOPCAST_SSL_CHECK_HOSTNAME=false``.
    """
    if settings.security_protocol not in SSL_PROTOCOLS:
        return None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path: Path | None = getattr(settings, name)
        if path is not None and not path.is_file():
            raise SettingsError(
                f"SHOPCAST_{name.upper()}: {str(path)!r} is not a readable file")
    if settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        raise SettingsError(
            "SHOPCAST_SSL_KEYFILE is set without SHOPCAST_SSL_CERTFILE: a client key needs "
            "its certificate")
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    if settings.ssl_certfile is not None:
        try:
            context.load_cert_chain(
                str(settings.ssl_certfile),
                str(settings.ssl_keyfile) if settings.ssl_keyfile else None)
        except ssl.SSLError as exc:
            raise SettingsError(
                f"SHOPCAST_SSL_CERTFILE/SHOPCAST_SSL_KEYFILE: cannot load the client "
                f"certificate {str(settings.ssl_certfile)!r}: {exc}") from None
    context.check_hostname = settings.ssl_check_hostname
    return context


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``.

    Contains ``bootstrap_servers`` and ``security_protocol``, plus ``ssl_context`` for TLS and
    ``sasl_mechanism``/``sasl_plain_username``/``sasl_plain_password`` for SASL (PLAIN or
    SCRAM). Add client-specific options (group id, acks, ...) on top.
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_list(settings),
        "security_protocol": settings.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.security_protocol in SASL_PROTOCOLS:
        assert settings.sasl_username and settings.sasl_password  # checked by Settings
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def faust_broker_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App``: ``broker`` and ``broker_credentials``.

    ``broker`` is a list of ``kafka://host:port`` URLs; ``broker_credentials`` is a
    ``SASLCredentials`` (SASL, with the TLS context for SASL_SSL), an ``SSLCredentials`` (SSL)
    or None (PLAINTEXT). Faust is imported here, not at module level, so the other clients do
    not pay for it.
    """
    from faust.auth import SASLCredentials, SSLCredentials

    credentials: SASLCredentials | SSLCredentials | None = None
    context = ssl_context(settings)
    if settings.security_protocol in SASL_PROTOCOLS:
        assert settings.sasl_username and settings.sasl_password  # checked by Settings
        credentials = SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism,
            ssl_context=context)
    elif context is not None:
        credentials = SSLCredentials(context)
    return {
        "broker": [f"kafka://{server}" for server in bootstrap_list(settings)],
        "broker_credentials": credentials,
    }
