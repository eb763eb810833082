"""After a concurrent step: what must hold whatever the interleaving.

The threads' survivors (`s stress_obj ID:SIZE:SEED`) all verify; with the
`classes` file, each class holds exactly the survivors of its size and the
pool's pages are the classes' pages; once they are freed the pool has no
page left. A failure names the first thing that did not hold, and its kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ...guest.zstest import BatchResult, ZsTest
from ...model import PoolModel
from .base import Outcome

SETTLE_SECONDS = 5.0  # for zsmalloc's deferred releases once the frees are done


def settled(want: int, read: Callable[[], int]) -> int:
    """Poll `read` until it gives `want` or SETTLE_SECONDS pass; its last value. A zspage
    emptied while migration held one of its pages is released by a worker, later."""
    deadline = time.monotonic() + SETTLE_SECONDS
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def pool_pages(zstest: ZsTest) -> int:
    """The current pool's pages (zstest's `stats`)."""
    return int(zstest.batch(["stats"]).value("pages"))


def survivors(result: BatchResult) -> list[tuple[int, int, int]]:
    """(id, size, seed) of every object the threads left behind."""
    return [
        (int(i), int(size), int(seed))
        for key, value in result.values
        if key == "stress_obj"
        for i, size, seed in [value.split(":")]
    ]


def settle(
    zstest: ZsTest,
    pool: str,
    left: list[tuple[int, int, int]],
    model: PoolModel,
    classes: bool,
    counts: dict[str, object],
) -> Outcome | None:
    """Check the survivors and the pool's counters, free them all: None when all held, else
    the failure with the scenario's `counts`."""
    if classes:
        want: dict[int, int] = {}
        for _, size, _ in left:
            index = model.class_of(size).index
            want[index] = want.get(index, 0) + 1
        rows = zstest.classes(pool)
        got = {r.index: r.obj_used for r in rows if r.obj_used}
        if got != want:
            wrong = sorted(i for i in set(got) | set(want) if got.get(i) != want.get(i))
            i = wrong[0]
            text = (
                f"class {i} has {got.get(i, 0)} objects in use, the threads left "
                f"{want.get(i, 0)} of its sizes"
            )
            return Outcome(text, "class-stats", counts)
        pages = int(zstest.batch(["stats"]).value("pages"))
        if pages != sum(r.pages_used for r in rows):
            text = f"the pool has {pages} pages, its classes {sum(r.pages_used for r in rows)}"
            return Outcome(text, "class-stats", counts)
    if left:  # an empty batch makes no write()
        check = zstest.batch([f"verify {oid} {seed}" for oid, _, seed in left])
        if check.failures:
            f = check.failures[0]
            text = f"survivor verify failed: line {f.line}: {f.reason} (errno {f.errno})"
            return Outcome(text, "data", counts)
    freed = zstest.batch([*(f"free {oid}" for oid, _, _ in left), "compact", "stats"])
    if freed.failures:
        f = freed.failures[0]
        text = f"freeing the survivors failed: line {f.line} {f.verb}: {f.reason}"
        return Outcome(text, "command", counts)
    pages = int(freed.value("pages")) and settled(0, lambda: pool_pages(zstest))
    if pages:
        text = (
            f"{pages} pages left in the pool {SETTLE_SECONDS:.0f} s after every object was "
            "freed (a leak)"
        )
        return Outcome(text, "leak", counts)
    return None
