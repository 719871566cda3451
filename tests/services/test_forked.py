"""The forked workers a first refresh runs on: every task taken once, results in order, the ready signal,
progress, and a failing worker reported without hanging the others."""

from __future__ import annotations

import os
import time

import pytest

from ccledger.services import forked

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_each_task_goes_to_exactly_one_worker_and_results_come_in_slot_order(tmp_path):
    shared = forked.Shared(tasks=50, workers=3)
    log = tmp_path / "taken"

    def work(slot: int) -> bytes:
        taken = []
        while (i := shared.claim()) is not None:
            taken.append(i)
            shared.add_progress(slot, 1)
            time.sleep(0.001)
        with log.open("a") as fh:  # forked processes: they report through a file
            fh.write(" ".join(map(str, taken)) + "\n")
        return f"{slot}:{os.getpid()}".encode()

    results = forked.run(shared, 3, work)
    assert [r.split(b":")[0] for r in results] == [b"0", b"1", b"2"]
    assert len({r.split(b":")[1] for r in results}) == 3  # three processes
    taken = [int(n) for line in log.read_text().split("\n") for n in line.split()]
    assert sorted(taken) == list(range(50))
    assert shared.progress() == 50
    shared.close()


def test_workers_wait_for_the_ready_signal_the_parent_gives_when_started():
    shared = forked.Shared(tasks=0, workers=2)
    order = []

    def started() -> None:
        time.sleep(0.2)
        order.append(time.monotonic())
        shared.set_ready()

    def work(slot: int) -> bytes:
        assert shared.wait_ready(10)
        return repr(time.monotonic()).encode()

    results = forked.run(shared, 2, work, started=started)
    assert all(float(r) >= order[0] for r in results)  # monotonic is one clock for the whole machine
    shared.close()


def test_a_failing_worker_stops_the_others_and_is_reported(tmp_path):
    shared = forked.Shared(tasks=200, workers=2)
    log = tmp_path / "done"

    def work(slot: int) -> bytes:
        done = 0
        try:
            while (i := shared.claim()) is not None:
                if slot == 0 and i >= 5:
                    raise ValueError("bad group")
                done += 1
                time.sleep(0.005)
        finally:
            with log.open("a") as fh:
                fh.write(f"{slot} {done}\n")
        return str(done).encode()

    with pytest.raises(forked.WorkerFailed, match="ValueError: bad group"):
        forked.run(shared, 2, work)
    done = dict(line.split() for line in log.read_text().splitlines())
    # The queue was emptied when the first worker failed: the other one took no more than a few tasks
    # of the ~195 it would otherwise have done.
    assert int(done["1"]) < 100
    assert shared.claim() is None
    shared.close()


def test_a_worker_that_dies_is_reported():
    shared = forked.Shared(tasks=1, workers=1)

    def work(slot: int) -> bytes:
        os._exit(3)

    with pytest.raises(forked.WorkerFailed, match="died"):
        forked.run(shared, 1, work)
    shared.close()


def test_groups_never_outnumber_what_the_queue_holds():
    """However many files (here 40,000 of one byte, asked for with two workers), the groups fit the
    workers' queue; and the history module's copy of the limit is the queue's."""
    from pathlib import Path

    from ccledger.services import history

    assert history.MAX_GROUPS == forked.MAX_TASKS
    work = [(Path(f"/x/{i}.jsonl"), None, 1) for i in range(40_000)]
    groups = history._groups(work, 2)
    assert len(groups) <= forked.MAX_TASKS
    assert sorted(str(w[0]) for g in groups for w in g) == sorted(str(w[0]) for w in work)
    with pytest.raises(ValueError, match="too many tasks"):
        forked.Shared(forked.MAX_TASKS + 1, 2)
