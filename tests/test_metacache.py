"""The metadata cache's listings: kept true by our own changes, copied out, expired."""

from __future__ import annotations

from s3mount.fs.attrs import Attr
from s3mount.fs.metacache import MetaCache


def attr(size: int = 1) -> Attr:
    return Attr(kind="file", mode=0o100644, size=size)


def test_listing_update_keeps_a_listing_true():
    now = [0.0]
    m = MetaCache(10, clock=lambda: now[0])
    m.put_listing("/d", [(f"f{i}", attr()) for i in range(5)])
    gen = m.listing_generation("/d")
    m.listing_update("/d/f1", None)                 # unlink
    m.listing_update("/d/new", attr(7))             # create
    m.listing_update("/d/f2", attr(9))              # rewrite
    names = dict(m.listing("/d"))
    assert list(names) == ["f0", "f2", "f3", "f4", "new"]
    assert names["f2"].size == 9 and names["new"].size == 7
    assert m.listed_absent("/d/f1") and not m.listed_absent("/d/new")
    assert not m.listed_absent("/other/x")         # no listing: nothing is known absent
    assert m.listing_generation("/d") == gen        # our own changes are not a new fetch
    m.put_listing("/d", [])
    assert m.listing_generation("/d") != gen and m.listing("/d") == []


def test_listing_is_a_copy_and_expires():
    now = [0.0]
    m = MetaCache(10, clock=lambda: now[0])
    m.put_listing("/", [("a", attr())])
    got = m.listing("/")
    got.append(("b", attr()))
    assert m.listing("/") == [("a", got[0][1])] and m.listed_absent("/b")
    now[0] = 11
    assert m.listing("/") is None and not m.has_listing("/") and not m.listed_absent("/b")
    m.listing_update("/c", attr())                  # nothing cached: nothing to update
    assert m.listing("/") is None
