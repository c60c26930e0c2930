"""The thin asyncio HTTP proxy in front of the request stream.

``create_app(settings, config)`` builds one replica's Starlette app; ``serve(settings)`` runs it
with uvicorn; ``add_cli(subparsers)`` adds ``rendezvous proxy`` to the command line.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rendezvous.proxy.apidoc import openapi
    from rendezvous.proxy.app import Proxy, create_app
    from rendezvous.proxy.server import serve
    from rendezvous.proxy.settings import ProxySettings
    from rendezvous.proxy.transport import InMemoryTransport, KafkaTransport, Record, Transport
    from rendezvous.proxy.validation import Validator, validate
    from rendezvous.settings import StackSettings

# Imported on first use, so that building the CLI parser stays fast.
_LAZY = {
    "Proxy": "app",
    "create_app": "app",
    "openapi": "apidoc",
    "serve": "server",
    "ProxySettings": "settings",
    "InMemoryTransport": "transport",
    "KafkaTransport": "transport",
    "Record": "transport",
    "Transport": "transport",
    "Validator": "validation",
    "validate": "validation",
}

__all__ = [
    "InMemoryTransport",
    "KafkaTransport",
    "Proxy",
    "ProxySettings",
    "Record",
    "Transport",
    "Validator",
    "add_cli",
    "cmd_proxy",
    "proxy_settings",
    "create_app",
    "openapi",
    "serve",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def proxy_settings(
    stack_settings: StackSettings, env: Mapping[str, str] | None = None, **flags: object
) -> ProxySettings:
    """The settings ``rendezvous proxy`` runs a replica with: the stack's addresses, then
    ``RDV_PROXY_*`` variables of ``env`` (default: the process's), then ``flags`` (None: not
    given). The demo builds the same to reach the replica it starts."""
    from rendezvous.proxy.settings import ProxySettings

    return ProxySettings.from_env(
        env,
        defaults={
            "bootstrap": stack_settings.kafka_bootstrap,
            "kafka_properties": stack_settings.kafka_properties,
            "host": stack_settings.host,
            "port": stack_settings.proxy_port,
            "tracking_uri": stack_settings.mlflow_url,
            "archive": stack_settings.archive_dir,
        },
        **flags,
    )


def cmd_proxy(args: argparse.Namespace, stack_settings: StackSettings) -> int:
    """``rendezvous proxy``: run one replica in the foreground until Ctrl-C."""
    from rendezvous.proxy import tls
    from rendezvous.proxy.server import serve

    settings = proxy_settings(
        stack_settings,
        config=args.config,
        host=args.host,
        port=args.port,
        replica_id=args.replica_id,
        results_partition=args.results_partition,
        bootstrap=args.bootstrap,
        archive=args.archive,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )
    from rendezvous.stack.kafka import check_login

    check_login(settings.kafka)  # a refused login fails here, in one line
    print(
        f"proxy replica {settings.replica_id} on {tls.url(settings)} ({tls.describe(settings)}; "
        f"Kafka {settings.kafka.describe()}, API at /docs)"
    )
    serve(settings)
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``proxy`` subcommand; its handler is ``cmd_proxy(args, stack_settings)``."""
    p = subparsers.add_parser(
        "proxy",
        help="run an HTTP proxy replica (sync and async scoring over Kafka)",
        description="Run one proxy replica with uvicorn. Settings come from RDV_PROXY_* "
        "variables; these flags override them.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="service configuration (YAML or JSON); default: $RDV_PROXY_CONFIG, else every "
        "service defined on the cluster (by `rendezvous submit`) when the proxy starts",
    )
    p.add_argument("--port", type=int, help="TCP port (default: the stack's proxy port, 8000)")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--replica-id", dest="replica_id", help="this replica's id (default: random)")
    p.add_argument(
        "--results-partition",
        dest="results_partition",
        metavar="N|auto|all",
        help="the partition of the results topic this replica reads and its requests name "
        "(default auto: a hash of the replica id; all: every partition)",
    )
    p.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: the local stack's broker)"
    )
    p.add_argument(
        "--archive",
        metavar="PATH",
        help="archive root, where feedback looks past requests up (default: the stack's)",
    )
    p.add_argument(
        "--tls-cert",
        dest="tls_cert",
        metavar="PEM",
        help="serve HTTPS with this certificate (the server's first, then its intermediates; "
        "default $RDV_PROXY_TLS_CERT, else plain HTTP)",
    )
    p.add_argument(
        "--tls-key",
        dest="tls_key",
        metavar="PEM",
        help="the certificate's private key (default: in the --tls-cert file); an encrypted "
        "key's password is read from $RDV_PROXY_TLS_KEY_PASSWORD",
    )
    p.add_argument(
        "--tls-client-ca",
        dest="tls_client_ca",
        metavar="PEM",
        help="require client certificates signed by these CA certificates (mutual TLS)",
    )
    p.set_defaults(func=cmd_proxy)
    return p
