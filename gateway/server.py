"""Running the gateway: the event loop, the listener, TLS, signals and draining (DESIGN §9)."""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from .app import build_app
from .config import Config

log = logging.getLogger("gateway.server")


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    tls = config.server.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional where it does not build
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: Config) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting and let in-flight requests finish."""
    if config.server.worker_count > 1:
        log.warning("workers: %d is not supported yet; serving with one process", config.server.worker_count)
    _install_uvloop()
    web.run_app(
        build_app(config),
        host=config.server.host,
        port=config.server.port,
        ssl_context=_ssl_context(config),
        shutdown_timeout=config.server.shutdown_timeout,
        access_log=None,
        print=lambda msg: log.info("%s", msg),
    )
