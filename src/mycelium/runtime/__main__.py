"""`python -m mycelium.runtime SETTINGS_JSON`: the node agent process `myc up` starts.

The one argument is `AgentSettings` as JSON. The admin token is read from the file it
names (never from the command line); the agent runs until SIGTERM or SIGINT, then stops
every pod (apps first, then their sidecars drain) before it exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import msgspec

from mycelium.discovery.client import ControllerAddress
from mycelium.runtime.node_agent import ControllerApi, NodeAgent
from mycelium.runtime.node_network import LoopbackNode, NetnsNode, NodeNetwork
from mycelium.runtime.process_pods import MeshAccess, PodSpec


class AgentSettings(msgspec.Struct, frozen=True, kw_only=True):
    controller_url: str
    token_file: str
    discovery: str  # HOST:PORT
    trust_bundle: str
    state_dir: str
    manifest_dir: str
    myc: list[str]
    pods: str = "process"  # "netns" (root) or "process"
    run: str = ""  # pod_network.run_id of the home: netns pods' names


async def serve(settings: AgentSettings, token: str) -> None:
    api = ControllerApi(settings.controller_url, token)

    async def join_token(spec: PodSpec) -> str:
        return await api.join_token(spec.namespace, spec.service_account)

    node: NodeNetwork
    if settings.pods == "netns":
        controller = ControllerAddress.parse(settings.discovery)
        node = NetnsNode(run=settings.run, controller=(controller.host, controller.port))
    else:
        node = LoopbackNode(settings.discovery)
    agent = NodeAgent(
        api,
        MeshAccess(
            myc=settings.myc,
            discovery=node.discovery,
            trust_bundle=Path(settings.trust_bundle),
            join_token=join_token,
        ),
        state_dir=Path(settings.state_dir),
        manifest_dir=Path(settings.manifest_dir),
        node=node,
    )
    running = asyncio.create_task(agent.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("node agent running", flush=True)
    await stop.wait()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await api.close()
    print("node agent stopped every pod", flush=True)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mycelium.runtime SETTINGS_JSON (start it with 'myc up')")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = msgspec.json.decode(sys.argv[1], type=AgentSettings)
    token = Path(settings.token_file).read_text().strip()
    asyncio.run(serve(settings, token))


if __name__ == "__main__":
    main()
