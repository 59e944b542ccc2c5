"""Jobs: workflow specs, planning and chunking, claims and leases, runs, and the executor of
worker processes. Reads and extends the log; reaches data through the ipfs Store."""
