"""The forms of the ids the log names: peer ids (this release's self-certifying 20 hex
digits, 0.1.0's random 16) and job ids ("j" and 12 hex digits). Pure."""

from __future__ import annotations

import secrets
from typing import Any

SELF_ID_CHARS = 20  # ids of 0.1.0 have 16 hex digits: they certify no key
OLD_ID_CHARS = 16  # (0.1.0's: random)
JOB_PREFIX = "j"
JOB_HEX_DIGITS = 12


def hex_digits(s: Any, n: int) -> bool:
    """Is `s` a string of exactly `n` lowercase hex digits?"""
    return type(s) is str and len(s) == n and not s.strip("0123456789abcdef")


def is_peer_id(s: Any) -> bool:
    """Is `s` a peer id a peer was ever given (SELF_ID_CHARS or OLD_ID_CHARS hex digits)?"""
    return hex_digits(s, SELF_ID_CHARS) or hex_digits(s, OLD_ID_CHARS)


def new_job_id() -> str:
    """A fresh job id (what a submission names its job)."""
    return JOB_PREFIX + secrets.token_hex(JOB_HEX_DIGITS // 2)


def is_job_id(s: Any) -> bool:
    """Is `s` of the form `new_job_id` makes? (Jobs of tests and older logs may be named
    otherwise: the log takes any id of 1 to MAX_ID_CHARS; lanes exist only for this form.)"""
    return type(s) is str and s[:1] == JOB_PREFIX and hex_digits(s[1:], JOB_HEX_DIGITS)
