"""Group commit with real threads: requests that arrive together are decided together."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from ledger.group_commit import Decided, GroupCommit


class Refused(Exception):
    pass


def test_concurrent_requests_share_batches_and_each_gets_its_own_outcome() -> None:
    batches: list[list[int]] = []
    deciding = threading.Lock()

    def decide_all(requests: Sequence[int]) -> list[Decided[int]]:
        assert deciding.acquire(blocking=False), "two batches were decided at once"
        try:
            batches.append(list(requests))
            time.sleep(0.01)  # a commit's worth of time, while others queue up
            return [Refused(r) if r % 10 == 3 else r * 2 for r in requests]
        finally:
            deciding.release()

    desk: GroupCommit[int, int] = GroupCommit(decide_all, max_batch=8)
    results: dict[int, object] = {}
    start = threading.Barrier(40)

    def call(n: int) -> None:
        start.wait()
        try:
            results[n] = desk.submit(n)
        except Refused as refusal:
            results[n] = refusal

    threads = [threading.Thread(target=call, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert sorted(r for batch in batches for r in batch) == list(range(40))
    assert max(len(b) for b in batches) > 1 and all(len(b) <= 8 for b in batches)
    assert len(batches) < 40
    for n in range(40):
        result = results[n]
        if n % 10 == 3:
            assert isinstance(result, Refused) and result.args == (n,)
        else:
            assert result == n * 2


def test_a_failing_batch_fails_its_requests_and_the_next_caller_still_leads() -> None:
    calls = 0

    def decide_all(requests: Sequence[str]) -> list[Decided[str]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the store went away")
        return [r.upper() for r in requests]

    desk: GroupCommit[str, str] = GroupCommit(decide_all)
    with pytest.raises(RuntimeError):
        desk.submit("first")
    assert desk.submit("second") == "SECOND"
