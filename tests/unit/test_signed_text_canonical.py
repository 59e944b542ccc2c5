"""Issue 12, session 52 helper b (task 1, not done): why a received event's content hash is
not taken from its payload's text as the frame holds it. A text that hashes to its signed
batch proves it is what the signer signed, not that it is the canonical encoding of the
payload it decodes to; a hostile signer may sign another spelling of a payload, which every
peer that receives the event re-encoded (a relay's frame, anti-entropy, a snapshot) refuses.
The receiver must refuse it too, whatever text the frame holds: these spellings, each signed
over its own text, are refused (bad_hash) and the canonical one is accepted."""

from __future__ import annotations

import hashlib
import json

import pytest

from peer.log import Event, EventType
from peer.log.signing import (
    CANONICAL,
    EVENT_DOMAIN,
    Batch,
    Identity,
    MemberKeys,
    batch_digest,
    peer_id_for,
)

ME = Identity.generate()
ID = peer_id_for(ME.key)
CLAIM = {"attempt": 0, "chunk": 0, "job": "j0123456789ab", "split": ["s", 1], "task": "tA"}
CANON = CANONICAL.encode(CLAIM)
SPELLINGS = {
    "canonical": CANON,
    "keys unsorted": json.dumps(dict(reversed(CLAIM.items())), separators=(",", ":")),
    "a space": CANON.replace(",", ", ", 1),
    "a key twice": '{"attempt":1,' + CANON[1:],
    "an escaped letter": CANON.replace('"tA"', '"t\\u0041"'),
    "a number spelled otherwise": CANON.replace('"attempt":0', '"attempt":-0'),
}


def _frame(text: str) -> tuple[list[object], list[object]]:
    """One CLAIM whose payload is `text` in the frame, in a batch signed over that text."""
    head = CANONICAL.encode([ID, 1, 1, int(EventType.CLAIM)])
    h = hashlib.sha256(EVENT_DOMAIN + (head[:-1] + "," + text + "]").encode()).digest()
    b = Batch(ID, ID, 1, h, ME.key, None, ME.sign(batch_digest(ID, ID, 1, h)))
    body = (f'{{"events":[{{"origin":"{ID}","seq":1,"hlc":1,"type":{int(EventType.CLAIM)},'
            f'"payload":{text},"b":1}}],"batches":[{json.dumps(b.to_json())}]}}')
    d = json.loads(body)
    return d["events"], d["batches"]


@pytest.mark.parametrize("name", SPELLINGS)
def test_a_signed_text_that_is_not_its_payloads_canonical_encoding_is_refused(name: str) -> None:
    text = SPELLINGS[name]
    assert (text == CANON) == (name == "canonical")
    keys = MemberKeys()
    got = keys.accept(*_frame(text))
    if name == "canonical":
        assert [e.payload for e in got] == [CLAIM] and not keys.refused.total
    else:
        assert got == [] and keys.refused.by_origin[ID] == {"bad_hash": 1}
    # ... where the frame's text, hashed as it is (as a row of this peer's own log is,
    # `Batch.mismatch`'s `row`), would have passed: that is the check the cut would lose
    raw, batches = _frame(text)
    e = Event.from_json(raw[0])
    assert Batch.from_json(batches[0]).mismatch(e, row=text) is None
