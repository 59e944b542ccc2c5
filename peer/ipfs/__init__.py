"""IPFS: CIDs, UnixFS with Kubo-identical CIDs, CAR, the Store protocol with its embedded and
Kubo-backed stores, the path and trustless gateway, the Kubo RPC subset, and fetching and
replication between peers."""

from peer.cids import Cid, parse_cid
from peer.ipfs.embedded import EmbeddedStore
from peer.ipfs.store import Entry, Store, StoreConfig, open_store

__all__ = ["Cid", "EmbeddedStore", "Entry", "Store", "StoreConfig", "open_store", "parse_cid"]
