"""IPFS: CIDs, UnixFS with Kubo-identical CIDs, CAR, the embedded and Kubo-backed stores, the
path and trustless gateway, the Kubo RPC subset, and fetching and replication between peers."""

from peer.ipfs.cids import Cid, parse_cid
from peer.ipfs.embedded import EmbeddedStore, Entry

__all__ = ["Cid", "EmbeddedStore", "Entry", "parse_cid"]
