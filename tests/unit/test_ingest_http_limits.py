"""API keys (hashed, constant-time lookup, never shown) and token buckets (a fake clock)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nodemeter.errors import ConfigError
from nodemeter.ingest_http.keys import ENV, KeyRing, hash_key, keys_from_env, presented_key
from nodemeter.ingest_http.ratelimit import RateLimiter, TokenBucket, retry_after

ACME_KEY = "acme-key-0123456789abcdef"
GLOBEX_KEY = "globex-key-0123456789abcdef"


class FakeMonotonicClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_bucket_pays_per_event_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    clock = FakeMonotonicClock()
    bucket = TokenBucket(10.0, 20, clock=clock)
    assert bucket.take(15) == 0.0
    assert bucket.take(10) == pytest.approx(0.5)  # 5 left, 5 short at 10/s
    assert bucket.take(5) == 0.0  # the refusal took nothing
    clock.t += 0.3
    assert bucket.take(5) == pytest.approx(0.2)
    clock.t += 100  # refills to the burst, not beyond
    assert bucket.take(20) == 0.0 and bucket.take(1) == pytest.approx(0.1)
    assert bucket.take(21) == math.inf  # more than the bucket holds: never


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert [retry_after(w) for w in (0.01, 1.0, 1.01, 7.5)] == [1, 1, 2, 8]


def test_each_key_has_its_own_bucket() -> None:
    clock = FakeMonotonicClock()
    limiter = RateLimiter(clock=clock)
    assert limiter.take("acme", 3, rate=1, burst=3) == 0.0
    assert limiter.take("acme", 1, rate=1, burst=3) == pytest.approx(1.0)
    assert limiter.take("globex", 3, rate=1, burst=3) == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (1, 0)])
def test_a_bucket_that_could_never_pay_is_a_config_error(rate: float, burst: int) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(rate, burst)


def test_keys_from_the_env_and_a_file_find_their_tenant(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [
        {"name": "globex-prod", "tenant": "globex", "sha256": hash_key(GLOBEX_KEY), "rate": 5,
         "burst": 50},
    ]}))  # fmt: skip
    ring = KeyRing.load(path, environ={ENV: f"acme={ACME_KEY}"})
    acme, globex = ring.lookup(ACME_KEY), ring.lookup(GLOBEX_KEY)
    assert acme is not None and (acme.name, acme.tenant, acme.rate) == ("acme", "acme", None)
    assert globex is not None and (globex.tenant, globex.rate, globex.burst) == ("globex", 5.0, 50)
    assert ring.lookup(ACME_KEY[:-1]) is None and ring.lookup("") is None
    # the keys are nowhere in what the objects show
    shown = repr(ring) + repr(acme) + repr(globex) + repr(ring.keys)
    assert ACME_KEY not in shown and "digest" not in shown and hash_key(ACME_KEY)[7:] not in shown


def test_the_env_can_carry_digests_instead_of_keys() -> None:
    (key,) = keys_from_env({ENV: f"acme={hash_key(ACME_KEY)}"})
    assert KeyRing([key]).lookup(ACME_KEY) is key


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ("acme", "tenant=KEY"),
        ("acme=short", "at least 16"),
        ("bad tenant!=0123456789abcdef0", "tenant"),
        ("acme=sha256:abc", "64 hex"),
        (f"acme={ACME_KEY},acme={GLOBEX_KEY}", "given twice"),
        (f"acme={ACME_KEY},globex={ACME_KEY}", "configured twice"),
    ],
)
def test_bad_key_config_is_refused_without_echoing_the_key(env: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyRing.load(None, environ={ENV: env})
    assert words in str(info.value)
    assert ACME_KEY not in str(info.value) and "short" not in str(info.value)


def test_a_keys_file_must_not_hold_keys_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"tenant": "acme", "key": ACME_KEY}]}))
    with pytest.raises(ConfigError, match="sha256, not the key itself"):
        KeyRing.load(path, environ={})
    with pytest.raises(ConfigError, match="no API keys"):
        KeyRing.load(None, environ={})


def test_the_key_comes_from_bearer_or_x_api_key() -> None:
    assert presented_key({"Authorization": f"Bearer {ACME_KEY}"}) == ACME_KEY
    assert presented_key({"Authorization": f"bearer  {ACME_KEY} "}) == ACME_KEY
    assert presented_key({"X-Api-Key": ACME_KEY}) == ACME_KEY
    assert presented_key({"Authorization": f"Basic {ACME_KEY}"}) is None
    assert presented_key({"Authorization": "Bearer "}) is None and presented_key({}) is None
