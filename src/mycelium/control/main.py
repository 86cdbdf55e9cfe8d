"""Run a controller in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

try:
    import uvloop
except ImportError:  # uvloop does not build everywhere; asyncio's loop works too
    uvloop = None  # type: ignore[assignment]

from mycelium.control.config import ControllerConfig
from mycelium.control.controller import Controller


async def serve(config: ControllerConfig, ready: asyncio.Event | None = None) -> None:
    controller = Controller(config)
    await controller.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"controller ready: api http://{config.api_host}:{controller.api_port} "
        f"discovery {config.discovery_host}:{controller.discovery_port} "
        f"store {controller.store.name} home {config.home}",
        flush=True,
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await controller.stop()


def run_controller(config: ControllerConfig) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if uvloop is not None:
        uvloop.run(serve(config))
    else:
        asyncio.run(serve(config))
