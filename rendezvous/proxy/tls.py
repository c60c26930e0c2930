"""TLS on the proxy: the server's certificate checked before it listens, uvicorn's options, and
how the project's own commands reach a replica that serves HTTPS.

With ``tls_cert`` set (PEM; ``tls_key`` holds its private key, default the same file), a
replica serves HTTPS only; with ``tls_client_ca`` too, it requires every client to present a
certificate signed by one of those CAs (mutual TLS) and refuses the handshake of any other.
Without ``tls_cert`` it serves plain HTTP.

:func:`server_context` loads the chain with :mod:`ssl` when the settings are built, so that a
missing or unreadable file, a key that is not the certificate's, an encrypted key without its
password or with a wrong one fail at start, in one line naming the setting, before anything
listens. uvicorn then loads the same files (:func:`uvicorn_options`); it applies them to the
pre-bound ``SO_REUSEPORT`` socket too (``Server.run(sockets=...)`` serves every socket with
the configuration's SSL context).

The project's own clients of a local replica (the demo, the readiness waits of a replica
replacement, the tests' served proxy) trust exactly the replica's own certificate, the first of
``tls_cert``'s file, as a trust anchor (:func:`client_context`): that pins the server, so its
host name is not checked (the certificate may name the public name, not 127.0.0.1). Under
mutual TLS they present ``tls_probe_cert`` and ``tls_probe_key``.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rendezvous.errors import ConfigError

if TYPE_CHECKING:
    from rendezvous.proxy.settings import ProxySettings

ENV_PREFIX = "RDV_PROXY_"
_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_KEY_RE = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_ENCRYPTED_RE = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED")
# The settings' command-line flags, for the error messages.
FLAGS = {"tls_cert": "--tls-cert", "tls_key": "--tls-key", "tls_client_ca": "--tls-client-ca"}


class _NoPassword(Exception):
    """OpenSSL asked for the key's password and none is set (never a prompt on a terminal)."""


def _fix(name: str, what: str) -> str:
    flag = FLAGS.get(name)
    return f"set {ENV_PREFIX}{name.upper()}" + (f" (or {flag})" if flag else "") + f" to {what}"


def _problem(name: str, path: Path | None, text: str, fix: str) -> ConfigError:
    shown = f"={str(path)!r}" if path is not None else ""
    return ConfigError(f"proxy setting {name}{shown}: {text}; {fix}")


def _read(name: str, path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _problem(
            name, path, f"cannot read the file ({exc.strerror or exc})", _fix(name, what)
        ) from None


def enabled(settings: ProxySettings) -> bool:
    return settings.tls_cert is not None


def check_settings(settings: ProxySettings) -> None:
    """The TLS settings that make no sense together (no files read)."""
    cert = settings.tls_cert
    for name in ("tls_key", "tls_key_password", "tls_client_ca", "tls_probe_cert"):
        if cert is None and getattr(settings, name) is not None:
            raise ConfigError(
                f"proxy setting {name} is set but tls_cert is not: TLS needs the server's "
                f"certificate; {_fix('tls_cert', 'its PEM file')}, or unset "
                f"{ENV_PREFIX}{name.upper()}"
            )
    if (settings.tls_probe_cert is None) != (settings.tls_probe_key is None):
        raise ConfigError(
            "proxy settings tls_probe_cert and tls_probe_key go together (the client "
            f"certificate the project's own commands present, and its key); set both "
            f"{ENV_PREFIX}TLS_PROBE_CERT and {ENV_PREFIX}TLS_PROBE_KEY, or neither"
        )
    if settings.tls_probe_cert is not None and settings.tls_client_ca is None:
        raise ConfigError(
            "proxy setting tls_probe_cert is set but tls_client_ca is not: a probe certificate "
            f"is only presented when the proxy requires client certificates; unset "
            f"{ENV_PREFIX}TLS_PROBE_CERT and {ENV_PREFIX}TLS_PROBE_KEY, or "
            f"{_fix('tls_client_ca', 'the CA file of client certificates')}"
        )


def server_context(settings: ProxySettings) -> ssl.SSLContext | None:
    """The replica's server context, built from its files as uvicorn will build it; None
    without TLS. ConfigError, in one line naming the setting and the fix, when a file is
    missing or unreadable, holds no certificate or key, or the key is not the certificate's,
    is encrypted without a password or with another one."""
    check_settings(settings)
    cert = settings.tls_cert
    if cert is None:
        return None
    key = settings.tls_key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(
        ctx, "tls_cert", cert, "tls_key", key, settings.tls_key_password_text, "tls_key_password"
    )
    ca = settings.tls_client_ca
    if ca is not None:
        data = _read("tls_client_ca", ca, "a readable PEM file of CA certificates")
        if _CERT_RE.search(data) is None:
            raise _problem(
                "tls_client_ca",
                ca,
                "no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)",
                _fix("tls_client_ca", "the PEM file of the CAs that sign client certificates"),
            )
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as exc:
            raise _problem(
                "tls_client_ca",
                ca,
                f"the CA certificates do not load ({exc.reason or exc})",
                _fix("tls_client_ca", "a valid PEM file of CA certificates"),
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _load_chain(
    ctx: ssl.SSLContext,
    cert_name: str,
    cert: Path,
    key_name: str,
    key: Path | None,
    password: str | None,
    password_setting: str | None,
) -> None:
    """``ctx.load_cert_chain`` with an error that says which file is wrong and how;
    ``password_setting``: the setting of the key's password (None: the key cannot have one)."""
    cert_data = _read(cert_name, cert, "a readable PEM certificate file")
    if _CERT_RE.search(cert_data) is None:
        raise _problem(
            cert_name,
            cert,
            "no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)",
            _fix(cert_name, "the certificate's PEM file (the server's certificate first)"),
        )
    key_path, key_setting = (key, key_name) if key is not None else (cert, cert_name)
    key_data = cert_data if key is None else _read(key_name, key, "a readable PEM key file")
    if _KEY_RE.search(key_data) is None:
        where = "in the file" if key is not None else f"in the file, and {key_name} is not set"
        raise _problem(
            key_setting,
            key_path,
            f"no PEM private key {where} (expected -----BEGIN PRIVATE KEY-----)",
            _fix(key_name, "the certificate's private key (PEM)"),
        )
    encrypted = _ENCRYPTED_RE.search(key_data) is not None
    ask = (
        f"set {ENV_PREFIX}{password_setting.upper()} to its password"
        if password_setting is not None
        else f"give {key_name} an unencrypted key"
    )
    if encrypted and password is None:
        raise _problem(
            key_setting, key_path, "the private key is encrypted and no password is set", ask
        )

    def give_password() -> str:
        if password is None:
            raise _NoPassword
        return password

    try:
        ctx.load_cert_chain(str(cert), None if key is None else str(key), give_password)
    except _NoPassword:
        raise _problem(
            key_setting, key_path, "the private key is encrypted and no password is set", ask
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise _problem(
                key_setting,
                key_path,
                f"the private key does not match the certificate in {cert_name}={str(cert)!r}",
                _fix(key_name, "the key the certificate was issued for")
                + f", or {ENV_PREFIX}{cert_name.upper()} to that key's certificate",
            ) from None
        if encrypted and password_setting is not None:
            raise _problem(
                password_setting,
                None,
                f"the password does not decrypt the private key {str(key_path)!r}",
                f"set {ENV_PREFIX}{password_setting.upper()} to that key's password",
            ) from None
        raise _problem(
            cert_name,
            cert,
            f"the certificate or its key does not load ({exc.reason or exc}); both must be PEM",
            _fix(cert_name, "the PEM certificate") + f" and {key_name} to its PEM private key",
        ) from None


def uvicorn_options(settings: ProxySettings) -> dict[str, Any]:
    """The ``ssl_*`` options of ``uvicorn.Config`` for these settings; none without TLS."""
    if settings.tls_cert is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": None if settings.tls_key is None else str(settings.tls_key),
        "ssl_keyfile_password": settings.tls_key_password_text,
    }
    if settings.tls_client_ca is not None:
        options["ssl_ca_certs"] = str(settings.tls_client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


# ---- the project's own clients of a local replica ------------------------------------------
def url(settings: ProxySettings) -> str:
    """The base URL a client on this machine reaches the replica at: ``https://`` with TLS."""
    host = settings.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if enabled(settings) else 'http'}://{host}:{settings.port}"


def client_context(settings: ProxySettings) -> ssl.SSLContext | None:
    """What the project's own commands verify a local replica with: its own certificate as
    the one trust anchor (no host name check, since that pins the server), and under mutual
    TLS the probe certificate presented; None without TLS."""
    if settings.tls_cert is None:
        return None
    data = _read("tls_cert", settings.tls_cert, "a readable PEM certificate file")
    first = _CERT_RE.search(data)
    if first is None:
        raise _problem(
            "tls_cert",
            settings.tls_cert,
            "no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)",
            _fix("tls_cert", "the certificate's PEM file"),
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the server's own certificate is trusted
    ctx.load_verify_locations(cadata=first.group(0).decode("ascii"))
    if settings.tls_probe_cert is not None:
        _load_chain(
            ctx,
            "tls_probe_cert",
            settings.tls_probe_cert,
            "tls_probe_key",
            settings.tls_probe_key,
            None,
            None,
        )
    return ctx


def verify(settings: ProxySettings) -> ssl.SSLContext | bool:
    """httpx's ``verify=`` for a local replica: :func:`client_context`, or True without TLS."""
    ctx = client_context(settings)
    return True if ctx is None else ctx


def describe(settings: ProxySettings) -> str:
    """``HTTPS``, ``HTTPS, client certificates required`` or ``plain HTTP``."""
    if settings.tls_cert is None:
        return "plain HTTP"
    if settings.tls_client_ca is not None:
        return "HTTPS, client certificates required"
    return "HTTPS"
