"""Which lines of a flapping outage are logged: a disk that fails every other write ends
an outage, then begins another, at every write (a larger merge fails, a smaller one
succeeds), and each outage logged its lines, without bound (review r1 M2's second half,
session 46). Pure: the caller passes the time (a monotonic clock, or a fake one in tests)
and logs what it is told to.

The rule: an outage's start is logged unless the last line logged is less than `window_s`
old (then it is a flap: counted, not logged); its end is logged if the log says, as its
last word, that the outage is on (so the log never ends saying it fails while it does not).
A flap's start is logged late, as a summary (`still`), once `window_s` passed since the
last line while it lasts (the caller asks on its retry timer, which runs while an outage
is on), so the log never ends saying it works while it fails for longer than a window.
So at most two lines (a start and an end) per `window_s`, plus one summary, each naming
the outages not logged since the last line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FLAP_WINDOW_S", "Flaps", "Repeats"]

FLAP_WINDOW_S = 60.0


@dataclass
class Flaps:
    """One kind of outage's lines (the log's writes, its fsyncs). Loop-owned."""

    window_s: float = FLAP_WINDOW_S
    on: bool = False  # an outage is under way
    said_on: bool = False  # the last line logged said so (its end is logged)
    last_line: float | None = None  # when the last line was logged (None: never)
    unlogged: int = 0  # outages that began since the last line and were not logged

    def start(self, now: float) -> str | None:
        """An outage begins: None if it is not logged (a flap, counted); else what to add
        to its line ("" or the flaps not logged since the last line)."""
        if self.on:
            return None  # (already under way: its start was counted)
        self.on = True
        if self.last_line is not None and now - self.last_line < self.window_s:
            self.unlogged += 1
            return None
        return self._said(now, on=True)

    def end(self, now: float) -> str | None:
        """The outage ends: what to add to its line if it is logged (the log said it is on),
        else None."""
        if not self.on:
            return None
        self.on = False
        if not self.said_on:
            return None
        return self._said(now, on=False)

    def still(self, now: float) -> str | None:
        """While an outage is on (the caller's retry timer): a summary's words if the log
        does not say so yet and the last line is `window_s` old; else None."""
        if not self.on or self.said_on or (
                self.last_line is not None and now - self.last_line < self.window_s):
            return None
        return self._said(now, on=True)

    @property
    def quiet(self) -> bool:
        """Flaps went unlogged since the last line: lines that go with a transition (the
        claims held, resumed) are not logged either."""
        return self.unlogged > 0

    def _said(self, now: float, *, on: bool) -> str:
        since = "" if self.last_line is None else f"{now - self.last_line:.0f} s"
        n = self.unlogged
        words = (f" ({n} more {'outage' if n == 1 else 'outages'} in the last {since}, not "
                 "logged each: it flaps)") if n else ""
        self.said_on, self.last_line, self.unlogged = on, now, 0
        return words


@dataclass
class Repeats:
    """Which lines of a failure that recurs are logged (a listener that raises on every
    event of a flood: `Node._tell`, session 48). Per key (the listener): the first failure
    of each kind (its exception type) is logged with its traceback; the others at most once
    per `window_s` on the caller's clock, one line without a traceback that counts those
    not logged since the key's last line. At most `max_traced` (key, kind) pairs are
    remembered (then a new kind is logged as a repeat). Loop-owned; pure."""

    window_s: float = FLAP_WINDOW_S
    max_traced: int = 256
    traced: set[tuple[str, str]] = field(default_factory=set)
    last_line: dict[str, float] = field(default_factory=dict)  # key -> when its last line was
    unlogged: dict[str, int] = field(default_factory=dict)  # key -> failures since, unlogged

    def note(self, key: str, kind: str, now: float) -> tuple[bool, int] | None:
        """A failure of `key`, of `kind`: None if it is not logged (counted); else
        (traceback, n): log it (with its traceback if the first bool says so), naming the
        `n` failures of `key` not logged since its last line."""
        first = (key, kind) not in self.traced and len(self.traced) < self.max_traced
        last = self.last_line.get(key)
        if not first and last is not None and now - last < self.window_s:
            self.unlogged[key] = self.unlogged.get(key, 0) + 1
            return None
        if first:
            self.traced.add((key, kind))
        self.last_line[key] = now
        return first, self.unlogged.pop(key, 0)
