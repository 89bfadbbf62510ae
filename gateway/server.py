"""Running the gateway: the event loop, the listener, TLS, signals and draining (DESIGN §9)."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from .app import make_server, open_gateway
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


async def _serve(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_gateway(config) as gateway:
        runner = web.ServerRunner(make_server(gateway), shutdown_timeout=config.server.shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, config.server.host, config.server.port, ssl_context=_ssl_context(config))
        await site.start()
        log.info("gateway listening on %s", site.name)
        await stop.wait()
        log.info("draining: no new connections, requests in flight finish within shutdown_timeout")
        # stops accepting first, then waits up to shutdown_timeout for requests in flight
        await runner.cleanup()
    log.info("stopped")


def serve(config: Config) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting and let in-flight requests finish."""
    if config.server.worker_count > 1:
        log.warning("workers: %d is not supported yet; serving with one process", config.server.worker_count)
    _install_uvloop()
    asyncio.run(_serve(config))
