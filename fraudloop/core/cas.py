"""Read-modify-write of one object with compare-and-swap, on every backend.

Small shared objects that several runs update (a partition's delivery ledger, a day of the
transaction-id index) are rebuilt from what is there and written only if nobody wrote in
between (``if_match`` / ``if_none_match``); a lost race re-reads and rebuilds.
"""

from __future__ import annotations

from collections.abc import Callable

from fraudloop.core.store import ObjectNotFound, ObjectStore, PreconditionFailed

ATTEMPTS = 50


def update(store: ObjectStore, key: str, build: Callable[[bytes | None], bytes | None]) -> bool:
    """``build(current bytes or None) -> new bytes``, or None to leave the object as it is.
    Returns whether it wrote."""
    for _ in range(ATTEMPTS):
        try:
            data, etag = store.get_with_etag(key)
        except ObjectNotFound:
            data, etag = None, None
        body = build(data)
        if body is None or body == data:
            return False
        try:
            if etag is None:
                store.put_bytes(key, body, if_none_match=True)
            else:
                store.put_bytes(key, body, if_match=etag)
            return True
        except PreconditionFailed:
            continue  # another writer won; re-read and rebuild
    raise RuntimeError(f"could not update {key}: too many concurrent writers")
