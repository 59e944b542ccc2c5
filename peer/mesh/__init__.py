"""The mesh: mDNS discovery and --join, transports (ZeroMQ, in-memory), and gossip that
replicates the log between peers: wire format, membership and anti-entropy, composed by
`gossip.Gossip` (whose docstring gives the algorithm)."""
