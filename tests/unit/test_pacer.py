"""TurnPacer: FIFO turns, spread over event-loop iterations so other callbacks (socket reads) run
between batches. No timings are asserted: budget 0 pins the batch to one turn per iteration."""

from __future__ import annotations

import asyncio

from servesweep.loadgen.pacer import TurnPacer


def test_turns_are_granted_in_request_order() -> None:
    async def main() -> list[int]:
        pacer, order = TurnPacer(), []

        async def worker(i: int) -> None:
            await pacer.turn()
            order.append(i)

        await asyncio.gather(*(worker(i) for i in range(50)))
        return order

    assert asyncio.run(main()) == list(range(50))


def test_other_callbacks_run_between_batches() -> None:
    """Twenty turns wanted at once with no budget: after the first batch, one turn per loop
    iteration, so a callback that requeues itself every iteration sees them spread out."""

    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        pacer = TurnPacer(budget_s=0.0)
        iteration = 0
        granted_at: list[int] = []
        stop = False

        def tick() -> None:
            nonlocal iteration
            iteration += 1
            if not stop:
                loop.call_soon(tick)

        async def worker() -> None:
            await pacer.turn()
            granted_at.append(iteration)

        loop.call_soon(tick)
        await asyncio.gather(*(worker() for _ in range(20)))
        stop = True
        return granted_at, iteration

    granted_at, _ = asyncio.run(main())
    assert len(granted_at) == 20
    first_batch = granted_at.count(granted_at[0])
    assert first_batch <= 8
    later = granted_at[first_batch:]
    assert len(set(later)) == len(later)  # one turn per iteration once the batch has adapted
    assert later == sorted(later)


def test_a_cancelled_waiter_gives_its_turn_up() -> None:
    async def main() -> list[str]:
        pacer, got = TurnPacer(), []

        async def worker(name: str) -> None:
            await pacer.turn()
            got.append(name)

        tasks = [asyncio.create_task(worker(n)) for n in ("a", "b", "c")]
        await asyncio.sleep(0)  # every worker is waiting for its turn now
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        # The pacer is still usable afterwards.
        await pacer.turn()
        got.append("d")
        return got

    assert asyncio.run(main()) == ["a", "c", "d"]
