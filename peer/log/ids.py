"""The forms of the ids the log names: peer ids (this release's self-certifying 20 hex
digits, 0.1.0's random 16) and job ids ("j" and 12 hex digits). Pure."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

SELF_ID_CHARS = 20  # ids of 0.1.0 have 16 hex digits: they certify no key
OLD_ID_CHARS = 16  # (0.1.0's: random)
JOB_PREFIX = "j"
JOB_HEX_DIGITS = 12
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
               draw: Callable[[int], str] = secrets.token_hex) -> str:
    """A fresh job id (what a submission names its job), none that `taken` says is known.

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
        if not taken(job):
            return job
    raise RuntimeError(f"new_job_id: {JOB_ID_DRAWS} draws in a row named known jobs "
                       "(the random source is broken)")


def is_job_id(s: Any) -> bool:
    """Is `s` of the form `new_job_id` makes? (Jobs of tests and older logs may be named
    otherwise: the log takes any id of 1 to MAX_ID_CHARS; lanes exist only for this form.)"""
    return type(s) is str and s[:1] == JOB_PREFIX and hex_digits(s[1:], JOB_HEX_DIGITS)
