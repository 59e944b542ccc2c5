"""The process's limit on open files, raised at start as Kubo raises its own (IPFS_FD_MAX,
8192): a peer holds a descriptor per HTTP client, per gossip connection (a handshake not yet
done too), per open block or SQLite file, per worker pipe. Linux's common soft limit of 1024
is what LAN hosts could fill with idle connections, which would leave the peer unable to
open a file. The soft limit goes up to `want`, never past the hard limit, never down."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("banzai.fdlimit")

WANT_FILES = 8192


def raise_open_files(want: int = WANT_FILES) -> int:
    """Raise RLIMIT_NOFILE's soft limit to `want` (at most the hard limit); the limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, e)
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning("open-files limit %d (hard limit %d): below %d, many clients could exhaust "
                    "it; raise it (systemd LimitNOFILE=, ulimit -n)", soft, hard, want)
    return soft


__all__ = ["WANT_FILES", "raise_open_files"]
