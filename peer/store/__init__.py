"""Embedded content store: blocks, UnixFS with Kubo-identical CIDs, CAR, pins and gc."""

from peer.store.cids import Cid, parse_cid
from peer.store.store import EmbeddedStore, Entry

__all__ = ["Cid", "EmbeddedStore", "Entry", "parse_cid"]
