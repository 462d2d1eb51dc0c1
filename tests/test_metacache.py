"""The metadata cache's listings: kept true by our own changes, copied out, expired."""

from __future__ import annotations

from s3mount.fs.attrs import Attr
from s3mount.fs.metacache import MISSING, MetaCache


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


def test_a_listing_keeps_what_a_head_told_of_the_same_object():
    """put_listed: a HEAD's answer cached for the same object (kind and ETag) stays, even one
    that landed while the listing ran; a changed object or a stale answer gives way to the
    listing; a HEAD made after the listing (the sample) wins."""
    now = [0.0]
    m = MetaCache(10, clock=lambda: now[0])
    headed = Attr(kind="file", mode=0o100600, size=1, etag="e1", has_meta=True)
    old = Attr(kind="file", mode=0o100600, size=1, etag="e0", has_meta=True)
    m.put("/d/stale", headed)
    now[0] = 5.0
    m.put("/d/fresh", headed)
    m.put("/d/changed", old)
    now[0] = 12.0  # /d/stale expired; /d/fresh and /d/changed have 3 s left
    m.put("/d/same", headed)  # as if landed while the listing ran
    listed = {n: Attr(kind="file", mode=0o100644, size=1, etag="e1", has_meta=False)
              for n in ("same", "changed", "stale", "fresh", "sampled")}
    sample = Attr(kind="file", mode=0o100640, size=1, etag="e1", has_meta=True)
    full = m.put_listed([(f"/d/{n}", a, sample if n == "sampled" else None)
                         for n, a in listed.items()])
    assert full == [True, False, False, True, True]
    assert m.get("/d/same") is headed and m.get("/d/fresh") is headed
    assert m.get("/d/changed") is listed["changed"] and m.get("/d/stale") is listed["stale"]
    assert m.get("/d/sampled") is sample
    assert m.get_many(["/d/same", "/d/nothing"]) == [headed, MISSING]
