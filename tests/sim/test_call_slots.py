"""The real RPC client and server on the simulated network and clock: calls that wait for a
call slot while answers arrive at their deadlines never lose a slot (issue 23, bug 6)."""

from __future__ import annotations

import asyncio
import random
import sys

from ramster.errors import RpcError
from ramster.rpc import Identity, RpcClient, RpcConfig, RpcServer
from ramster.rpc.session import ANYONE
from ramster.testing.sim.cluster import SECRET
from ramster.testing.sim.liveness import leaked_slots
from ramster.testing.sim.loop import Proc, SimLoop, virtual_world
from ramster.testing.sim.network import SimNetwork

TRIALS = 300


def _trial(seed: int) -> int:
    """Three calls at one instant through one slot, answered just before their deadline:
    the slots the connection has lost afterwards."""
    loop = SimLoop(cpu=random.Random(seed))
    loop.set_exception_handler(lambda _loop, _context: None)
    net = SimNetwork(loop, random.Random(seed + 1))
    loop.network = net
    config = RpcConfig(max_in_flight=1, call_timeout=1.0)
    rng = random.Random(seed + 2)
    client_proc, server_proc = Proc("a", 1), Proc("b", 1)

    async def late(_params: object) -> int:
        await asyncio.sleep(1.0 - rng.uniform(0.0, 0.004))
        return 1

    async def main() -> int:
        server = RpcServer(
            SECRET, config, host="10.0.0.2", port=7070, identity=Identity.node("b", "1-1")
        )
        server.register("late", late, roles=ANYONE)
        await loop.create_task(server.start(), context=server_proc.fork())
        client = RpcClient("10.0.0.2", 7070, SECRET, config, identity=Identity.node("a", "1-1"))

        async def calls() -> int:
            await client.ping()
            await asyncio.gather(
                *(client.call("late", []) for _ in range(3)), return_exceptions=True
            )
            return sum(leaked_slots(c) for c in client._conns)

        return await loop.create_task(calls(), context=client_proc.fork())

    try:
        with virtual_world(loop, random.Random(seed)):
            return loop.run_until_complete(main())
    except RpcError:
        return 0
    finally:
        loop.close()


def test_no_call_slot_is_lost_at_a_deadline() -> None:
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None  # the never-resumed coroutines of the servers
    try:
        leaked = {seed: n for seed in range(TRIALS) if (n := _trial(seed))}
    finally:
        sys.unraisablehook = hook
    assert not leaked, f"slots lost (trial: slots): {leaked}"
