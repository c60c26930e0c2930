"""Running one proxy replica as a process: its configuration, then uvicorn."""

from __future__ import annotations

import gc
import socket
from typing import Any

from rendezvous.config import Config
from rendezvous.errors import ConfigError, PortInUse
from rendezvous.proxy import tls
from rendezvous.proxy.app import create_app, resolve_signature_inputs
from rendezvous.proxy.settings import ProxySettings

# An idle connection is closed this long after its last response. uvicorn has no timer for a
# request head that arrives slowly (its parsers only cap the head's size), so a client that
# opens connections and trickles headers is held off by a load balancer in front, not here;
# the body has the proxy's own timeout (ProxySettings.body_timeout_ms, answered with 408).
KEEP_ALIVE_S = 5
# A replica starts listening once it is ready, or after this long (then /readyz says why).
READY_WAIT_S = 30.0


def server_options(settings: ProxySettings) -> dict[str, Any]:
    """The uvicorn options of one replica (no access log; loop and parser ``auto``; the
    ``ssl_*`` options with TLS, which uvicorn applies to the pre-bound socket too)."""
    return {
        **tls.uvicorn_options(settings),
        "host": settings.host,
        "port": settings.port,
        "loop": "auto",
        "http": "auto",
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "log_level": "info",
        "timeout_keep_alive": KEEP_ALIVE_S,
    }


def defined_on_cluster(settings: ProxySettings, log=None) -> Config:
    """Every service defined on the cluster (the definitions on its control topic), for a
    proxy started without a configuration file; ConfigError when there is none."""
    from rendezvous import control

    log = log or control.KafkaControl(settings.kafka)
    defined = control.defined_services(log)
    if not defined:
        raise ConfigError(
            f"no service is defined on the cluster at {settings.kafka.describe()}: submit a "
            "configuration first (`rendezvous submit --config FILE`), or give the proxy "
            "one with --config FILE or RDV_PROXY_CONFIG"
        )
    return Config(
        services={d.service: d.spec() for d, _ in defined},
        source=f"the services defined on {settings.kafka.describe()}",
    )


def serve(settings: ProxySettings, config: Config | None = None) -> None:
    """Run one replica with uvicorn until interrupted (options: :func:`server_options`)."""
    import uvicorn

    from rendezvous.config import load

    sock = listening_socket(settings.host, settings.port)
    if config is None:
        config = load(settings.config) if settings.config else defined_on_cluster(settings)
    config = resolve_signature_inputs(config, settings.tracking_uri)
    app = create_app(settings, config, ready_wait_s=READY_WAIT_S)
    # What is loaded by now (modules, the configuration, the app) lives as long as the process:
    # out of the collector's sight, it is no longer walked by every full collection.
    gc.collect()
    gc.freeze()
    uvicorn.Server(uvicorn.Config(app, **server_options(settings))).run(sockets=[sock])


def listening_socket(host: str, port: int) -> socket.socket:
    """The replica's listening socket, bound with ``SO_REUSEPORT``: a new replica can start
    on the same port while the old one still serves, the kernel spreads new connections over
    both, and the old one stops accepting when it is told to stop (see
    :func:`rendezvous.proxy.handover.replace`). Nothing is refused during the change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(
            f"cannot listen on {host}:{port} ({exc.strerror}): another process holds the port "
            "without sharing it; stop it, or give the proxy another port (--port, "
            "RDV_PROXY_PORT)"
        ) from None
    # Not listening yet: the server listens when its app has started (see READY_WAIT_S), and
    # until then the kernel sends no connection here.
    return sock
