"""The forms of the ids the log names: peer ids (this release's self-certifying 20 hex
digits, 0.1.0's random 16) and job ids: "j" and 12 hex digits, or (session 46, helper f)
those and "." and the self-certifying id of the peer that submitted the job, a *bound* id:
a JOB_SUBMITTED of a bound id is its job's only if its origin is the peer the id names
(`submitter_problem`: the door refuses, the fold skips any other), so no member can send a
rival JOB_SUBMITTED of another's job (docs/design/partial-replication.md, section 8). Bound
ids are made only while every member understands them (BOUND_FEATURE: peer.node). Pure."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

SELF_ID_CHARS = 20  # ids of 0.1.0 have 16 hex digits: they certify no key
OLD_ID_CHARS = 16  # (0.1.0's: random)
JOB_PREFIX = "j"
JOB_HEX_DIGITS = 12
BOUND_SEPARATOR = "."  # between a bound job id's hex digits and its submitter's peer id
# A heartbeat's (and MEMBER's) `features`: it takes bound job ids for its lanes (`is_job_id`)
# and refuses a JOB_SUBMITTED of one from another origin. Peers of the previous release take
# any job id of the log's bounds for a plain job, but no bound id for a lanes job (their
# `is_job_id`): a peer makes bound ids only while every member announces this.
BOUND_FEATURE = "boundids-v1"
# Draws `new_job_id` makes before it gives up: each is taken with probability (jobs known) /
# 2^48, so a second draw is already rare; eight taken in a row means a broken random source.
JOB_ID_DRAWS = 8


def hex_digits(s: Any, n: int) -> bool:
    """Is `s` a string of exactly `n` lowercase hex digits?"""
    return type(s) is str and len(s) == n and not s.strip("0123456789abcdef")


def is_peer_id(s: Any) -> bool:
    """Is `s` a peer id a peer was ever given (SELF_ID_CHARS or OLD_ID_CHARS hex digits)?"""
    return hex_digits(s, SELF_ID_CHARS) or hex_digits(s, OLD_ID_CHARS)


def new_job_id(taken: Callable[[str], bool] = lambda job: False,
               draw: Callable[[int], str] = secrets.token_hex,
               submitter: str | None = None) -> str:
    """A fresh job id (what a submission names its job), none that `taken` says is known;
    bound to `submitter` (its own peer id, self-certifying: ValueError else) if one is given.

    Ids are 48 random bits: a mesh that runs many small jobs for months draws one it holds
    already (of a live, compacted or deleted job: about n / 2^48 per draw with n known, so
    an even chance of one within 2^24 jobs, some days of a script's back-to-back jobs).
    Such a job's JOB_SUBMITTED would fold as a rival of the old one (the earlier wins) or
    as an event of a compacted or deleted job (never run, never shown): the POST would
    answer its id and the job would never be seen again. A job known nowhere here but on a
    peer cut off from us is not seen; the chance of that is far smaller (a draw within the
    same window of one of the few jobs in flight elsewhere)."""
    for _ in range(JOB_ID_DRAWS):
        job = JOB_PREFIX + draw(JOB_HEX_DIGITS // 2)
        if submitter is not None:
            job = bind(job, submitter)
        if not taken(job):
            return job
    raise RuntimeError(f"new_job_id: {JOB_ID_DRAWS} draws in a row named known jobs "
                       "(the random source is broken)")


def bind(job: str, submitter: str) -> str:
    """The bound id of an unbound `job` (of the form `new_job_id` makes) and `submitter`;
    ValueError if either is not of its form (only a self-certifying peer id binds: a peer id
    of 0.1.0 certifies no key, and another member could claim it)."""
    if not (_is_unbound(job) and hex_digits(submitter, SELF_ID_CHARS)):
        raise ValueError(f"no job id binds {job!r:.40} to {submitter!r:.40}: a job id 'j' and "
                         f"{JOB_HEX_DIGITS} lowercase hex digits, a peer id {SELF_ID_CHARS}")
    return job + BOUND_SEPARATOR + submitter


def _is_unbound(s: Any) -> bool:
    return type(s) is str and s[:1] == JOB_PREFIX and hex_digits(s[1:], JOB_HEX_DIGITS)


def submitter_of(s: Any) -> str | None:
    """The peer a bound job id names (its submitter), or None: any other id (unbound, of
    tests and older logs, or no job id at all: unprotected)."""
    if type(s) is not str or len(s) != 1 + JOB_HEX_DIGITS + 1 + SELF_ID_CHARS:
        return None
    job, sep, peer = s.rpartition(BOUND_SEPARATOR)
    return peer if sep and _is_unbound(job) and hex_digits(peer, SELF_ID_CHARS) else None


def submitter_problem(origin: str, job: Any) -> str | None:
    """Why a JOB_SUBMITTED of `job` from `origin` is no submission of it, or None: a bound
    id names its submitter, and any other origin's is a rival (the door refuses it, the
    fold skips a stored one: decided by the event alone, so in any order). An unbound id
    is not checked (any member may send a rival of it: docs/security.md)."""
    peer = submitter_of(job)
    if peer is None or origin == peer:
        return None
    return (f"job_submitter: a JOB_SUBMITTED of job {job} from {origin!r:.60}, not the "
            f"peer its id names ({peer})")


def is_job_id(s: Any) -> bool:
    """Is `s` of a form `new_job_id` makes (unbound or bound)? (Jobs of tests and older logs
    may be named otherwise: the log takes any id of 1 to MAX_ID_CHARS; lanes exist only for
    these forms.)"""
    return _is_unbound(s) or submitter_of(s) is not None
