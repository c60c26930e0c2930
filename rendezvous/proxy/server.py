"""Running one proxy replica as a process: its configuration, then uvicorn."""

from __future__ import annotations

import gc
from typing import Any

from rendezvous.config import Config
from rendezvous.errors import ConfigError
from rendezvous.proxy.app import create_app, resolve_signature_inputs
from rendezvous.proxy.settings import ProxySettings

# An idle connection is closed this long after its last response. uvicorn has no timer for a
# request head that arrives slowly (its parsers only cap the head's size), so a client that
# opens connections and trickles headers is held off by a load balancer in front, not here;
# the body has the proxy's own timeout (ProxySettings.body_timeout_ms, answered with 408).
KEEP_ALIVE_S = 5


def server_options(settings: ProxySettings) -> dict[str, Any]:
    """The uvicorn options of one replica (no access log; loop and parser ``auto``)."""
    return {
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

    if config is None:
        config = load(settings.config) if settings.config else defined_on_cluster(settings)
    config = resolve_signature_inputs(config, settings.tracking_uri)
    app = create_app(settings, config)
    # What is loaded by now (modules, the configuration, the app) lives as long as the process:
    # out of the collector's sight, it is no longer walked by every full collection.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, **server_options(settings))
