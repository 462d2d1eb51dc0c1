"""Background HEADs of listed entries: a queue worked by a few threads, in the order the
entries were given, and the answers kept for the lookups that come for them.

A whole listing's HEADs are queued under one lock and the workers woken once: handed to a
thread pool one by one, each submit woke a worker that took the GIL from the thread still
submitting (queueing 100 took 8.7 ms instead of well under one, bench trace).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from concurrent.futures import Future
from typing import Callable, Optional

from .attrs import Attr

Head = Callable[[str, str], Optional[Attr]]   # (path, kind) -> attributes, None if absent


class HeadPrefetcher:
    """`start` queues HEADs; `take` hands a lookup the answer of one started lately."""

    def __init__(self, head: Head, streams: int, fresh_for: Callable[[], float],
                 limit: int = 4 * 4096):
        self._head = head
        self._streams = streams
        self._fresh_for = fresh_for          # seconds an answer may serve a lookup
        self._limit = limit                  # answers kept before stale ones are dropped
        self._pending: dict[str, tuple[float, Future]] = {}  # path -> (started, HEAD)
        self._queue: collections.deque[tuple[str, str, Future]] = collections.deque()
        self._cv = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._own: collections.Counter[str] = collections.Counter()  # HEADs lookups make themselves

    def start(self, items: list[tuple[str, str]]) -> None:
        """HEAD each (path, kind) not already started, in this order."""
        if not items:
            return
        now = time.monotonic()
        with self._cv:
            if len(self._pending) > self._limit:  # results nobody asked for: drop the stale
                horizon = now - self._fresh_for()
                for q in [q for q, (t, _) in self._pending.items() if t < horizon]:
                    del self._pending[q]
            added = 0
            for path, kind in items:
                if path not in self._pending and path not in self._own:
                    fut: Future = Future()
                    self._pending[path] = (now, fut)
                    self._queue.append((path, kind, fut))
                    added += 1
            while len(self._threads) < min(self._streams, len(self._queue)):
                t = threading.Thread(target=self._work, daemon=True,
                                     name=f"s3fs-prefetch_{len(self._threads)}")
                self._threads.append(t)
                t.start()
            self._cv.notify(min(added, self._streams))

    def take(self, path: str) -> Future | None:
        """The HEAD of `path` started lately (it may still run), no longer kept here."""
        with self._cv:
            started, fut = self._pending.pop(path, (0.0, None))
        if fut is not None and time.monotonic() - started <= self._fresh_for():
            return fut
        return None

    @contextlib.contextmanager
    def own_head(self, path: str):
        """A lookup HEADs `path` itself meanwhile: HEADs started meanwhile leave it out."""
        with self._cv:
            self._own[path] += 1
        try:
            yield
        finally:
            with self._cv:
                self._own[path] -= 1
                if not self._own[path]:
                    del self._own[path]

    def drop(self, path: str, tree: bool = False) -> None:
        """Forget the answers for `path` (and, with tree, everything below it)."""
        with self._cv:
            self._pending.pop(path, None)
            if tree:
                below = path.rstrip("/") + "/"
                for q in [q for q in self._pending if q.startswith(below)]:
                    del self._pending[q]

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                path, kind, fut = self._queue.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self._head(path, kind))
            except BaseException as e:  # noqa: BLE001 - the lookup that takes it re-raises
                fut.set_exception(e)
