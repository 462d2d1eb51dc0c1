"""Block-number sets as they are written in a cache file's index: runs of consecutive blocks.

Why: a sequential writer journals its entry at every write that dirties a new block, and a
list of every block number made that O(blocks) per write, O(blocks^2) per file: 2,048-number
lists written 512 times for a 512 MiB file, minutes of CPU for a 5 GiB one. A file written or
read in order is one run whatever its size.
"""

from __future__ import annotations

from typing import Iterable


def to_runs(blocks: Iterable[int], then: range = range(0)) -> list[list[int]]:
    """{0, 1, 2, 7} -> [[0, 2], [7, 7]] (inclusive ends), followed by the blocks of `then`,
    which must all come after every block of `blocks`."""
    runs: list[list[int]] = []
    first_last = [min(blocks), max(blocks)] if isinstance(blocks, (set, frozenset)) and blocks \
        else None
    if first_last and first_last[1] - first_last[0] + 1 == len(blocks):  # common case, C speed
        runs.append(first_last)
    else:
        for b in sorted(blocks):
            if runs and b == runs[-1][1] + 1:
                runs[-1][1] = b
            else:
                runs.append([b, b])
    if then:
        if runs and runs[-1][1] + 1 == then.start:
            runs[-1][1] = then.stop - 1
        else:
            runs.append([then.start, then.stop - 1])
    return runs


def from_runs(items: Iterable) -> set[int]:
    """The inverse of to_runs; plain block numbers (the index format before runs) are read too."""
    blocks: set[int] = set()
    for item in items:
        if isinstance(item, int):
            blocks.add(item)
        else:
            first, last = item
            if not (isinstance(first, int) and isinstance(last, int)) or last < first:
                raise ValueError(f"bad block run {item!r}")
            blocks.update(range(first, last + 1))
    return blocks
