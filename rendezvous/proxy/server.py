"""Running one proxy replica as a process: its configuration, then uvicorn."""

from __future__ import annotations

from rendezvous.config import Config
from rendezvous.errors import ConfigError
from rendezvous.proxy.app import create_app, resolve_signature_inputs
from rendezvous.proxy.settings import ProxySettings


def serve(settings: ProxySettings, config: Config | None = None) -> None:
    """Run one replica with uvicorn until interrupted (no access log; loop ``auto``)."""
    import uvicorn

    from rendezvous.config import load

    if config is None:
        if settings.config is None:
            raise ConfigError(
                "the proxy needs the service configuration: pass --config FILE or set "
                "RDV_PROXY_CONFIG"
            )
        config = load(settings.config)
    config = resolve_signature_inputs(config, settings.tracking_uri)
    app = create_app(settings, config)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="info",
    )
