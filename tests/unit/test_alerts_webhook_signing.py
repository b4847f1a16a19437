"""Webhook signatures and backoff (pure)."""

from __future__ import annotations

import itertools

from nodemeter_stream.alerts_webhook import Recent, backoff, sign, verify

SECRET = b"s3cret"
BODY = b'{"alert_id": "a1", "spend_amount": "80.000000000001"}'


def test_a_signature_verifies_and_any_change_breaks_it() -> None:
    header = sign(SECRET, 1_800_000_000, BODY)
    assert header.startswith("t=1800000000,v1=")
    assert verify(SECRET, header, BODY, now=1_800_000_010)
    assert not verify(SECRET, header, BODY.replace(b"80", b"8"), now=1_800_000_010)
    assert not verify(b"other", header, BODY, now=1_800_000_010)
    assert not verify(SECRET, header.replace("t=1800000000", "t=1800000001"), BODY,
                      now=1_800_000_010)  # fmt: skip
    assert not verify(SECRET, header, BODY, now=1_800_000_000 + 301)  # replayed later
    assert not verify(SECRET, "garbage", BODY, now=1_800_000_000)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(itertools.islice(backoff(0.5, 4.0), 6)) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_recent_ids_are_bounded() -> None:
    r = Recent(size=2)
    for k in ("a", "b", "c"):
        r.add(k)
    assert "a" not in r and "b" in r and "c" in r
