"""The rules of sharing, checked exactly: `FairShare` (what an identity may hold of a bound) and `Turns`
(which waiting identity a freed scoring slot goes to). The HTTP tests (tests/http/test_fair_share.py)
show the same rules at work in the service."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import ServiceUnavailable
from service.fair_share import FairShare
from service.workers.turns import Turns


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers(1, 40)), max_size=60))
def test_no_flood_of_takes_fills_the_bound_or_passes_a_share(takes: list[tuple[str, int]]) -> None:
    """Whatever the owners ask, in any order: the bound holds, no owner holds more than half of what
    the others leave, and with k owners holding there is still limit / 2^k free (rounded down)."""
    share = FairShare(limit=1000, share=0.5)
    for owner, amount in takes:
        share.take(owner, amount)
        assert share.held <= share.limit
        for name in "abcde":
            assert share.held_by(name) <= 0.5 * (share.limit - (share.held - share.held_by(name))) + 1e-9
    holders = sum(share.held_by(name) > 0 for name in "abcde")
    assert share.limit - share.held >= share.limit // 2 ** holders - holders


def test_a_share_given_back_is_free_again_and_least_is_always_allowed() -> None:
    share = FairShare(limit=2, share=0.5, least=1)
    assert share.take("a", 1) and not share.take("a", 1)  # half of 2, and at least 1
    assert share.take("b", 1) and not share.take("c", 1)  # the bound itself is full
    share.give_back("a", 1)
    assert share.held == 1 and share.held_by("a") == 0 and share.take("c", 1)


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_freed_slot_goes_to_another_identity_before_the_one_that_freed_it() -> None:
    async def scenario() -> list[str]:
        turns = Turns(1, FairShare(limit=10, share=0.5, least=1))
        served: list[str] = []
        await turns.acquire("alice")  # running

        async def wait(owner: str, label: str) -> None:
            await turns.acquire(owner)
            served.append(label)

        waiters = [asyncio.create_task(wait("alice", f"alice-{n}")) for n in (1, 2, 3)]
        waiters.append(asyncio.create_task(wait("bob", "bob")))
        await asyncio.sleep(0)  # every waiter is in line (one step of the loop, no time involved)
        assert turns.queued == 4
        owner = "alice"
        for _ in range(4):
            turns.release(owner)
            await asyncio.sleep(0)
            owner = served[-1].split("-")[0]
        await asyncio.gather(*waiters)
        return served

    assert run(scenario()) == ["bob", "alice-1", "alice-2", "alice-3"]


def test_a_cancelled_waiter_leaves_its_place_and_a_full_share_is_refused() -> None:
    async def scenario() -> None:
        turns = Turns(1, FairShare(limit=4, share=0.5, least=1))
        await turns.acquire("alice")
        first = asyncio.create_task(turns.acquire("alice"))
        second = asyncio.create_task(turns.acquire("alice"))
        await asyncio.sleep(0)
        assert turns.queued == 2
        with pytest.raises(ServiceUnavailable, match="2 of them yours"):
            await turns.acquire("alice")  # alice holds her half of the 4 places
        first.cancel()
        await asyncio.sleep(0)
        assert turns.queued == 1
        turns.release("alice")
        await second  # the slot went to the waiter still in line
        assert turns.queued == 0

    run(scenario())
