"""One zskit at a time: an advisory file lock around work that others reuse."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(lock: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """One zskit at a time holds the lock (e.g. builds a root); others wait, then reuse it.

    `waiting` is called once when another zskit holds the lock, before waiting for it,
    so a user whose command seems to hang is told why.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
