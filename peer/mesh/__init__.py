"""The mesh: mDNS discovery and --join, the ZeroMQ transport, and gossip (wire format,
membership, anti-entropy) that replicates the log between peers."""
