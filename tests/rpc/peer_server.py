"""A peer in its own process for kill -9 tests: `python peer_server.py PORT` (0 = any free port).

The secret comes from $RAMSTER_CLUSTER_SECRET, never the command line; the bound port is printed
as the first line of stdout once the server listens.
"""

from __future__ import annotations

import asyncio
import sys

from ramster.rpc import RpcConfig, RpcServer, load_secret, run
from ramster.rpc.session import ANYONE
from ramster.rpc.testing import DictPageStore


async def main(port: int) -> None:
    """Serve pages plus `sleep` (answers after params[0] seconds) until killed."""
    server = RpcServer(load_secret(), RpcConfig(cluster="test"), port=port)
    server.register_pages(DictPageStore())

    async def sleep(params: list[object]) -> str:
        delay = params[0]
        assert isinstance(delay, int | float)
        await asyncio.sleep(delay)
        return "slept"

    server.register("sleep", sleep, roles=ANYONE)
    await server.start()
    print(server.port, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


if __name__ == "__main__":
    run(main(int(sys.argv[1])))
