"""How a batch of NBD requests is answered, as pure logic: consecutive READs become one load,
consecutive WRITEs (with the short TRIMs and WRITE_ZEROES among them) one mutation, refused
requests an error reply each, everything else a step of its own, all in request order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ramster.nbd import const
from ramster.nbd.mutation import TRIM, WRITE, ZERO, Mutation
from ramster.nbd.wire import Request, check

READ = 0
MUTATE = -1
ALONE = -2
DISC = -3
"""Step kinds; a positive kind is the NBD error a refused request is answered with."""


@dataclass(frozen=True, slots=True)
class Step:
    """Requests answered together, in order."""

    kind: int
    requests: Sequence[Request]


def kind(request: Request, error: int) -> int:
    """How a request is answered: its error (> 0), or one of READ, MUTATE, ALONE, DISC."""
    if error:
        return error
    cmd = request.cmd
    if cmd == const.CMD_READ:
        return READ
    if cmd == const.CMD_WRITE:
        return MUTATE
    if cmd in (const.CMD_TRIM, const.CMD_WRITE_ZEROES):
        return MUTATE if request.length <= const.BATCHED_RANGE else ALONE
    if cmd == const.CMD_DISC:
        return DISC
    return ALONE


def plan(batch: Sequence[Request], size: int, max_payload: int) -> list[Step]:
    """The steps that answer `batch` against an export of `size` bytes."""
    kinds = [kind(r, check(r, size, max_payload)) for r in batch]
    steps: list[Step] = []
    i = 0
    n = len(batch)
    while i < n:
        k = kinds[i]
        j = i + 1
        if k in (READ, MUTATE):
            while j < n and kinds[j] == k:
                j += 1
        steps.append(Step(k, batch[i:j]))
        i = j
    return steps


def mutation(request: Request) -> Mutation:
    """A WRITE, WRITE_ZEROES or TRIM as the export's mutation."""
    if request.cmd == const.CMD_WRITE:
        return (WRITE, request.offset, request.payload)
    return (ZERO if request.cmd == const.CMD_WRITE_ZEROES else TRIM, request.offset, request.length)
