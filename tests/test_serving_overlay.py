"""The service's online overlay: de-duplicated on (id, content), bounded in size; the bearer
scheme read as RFC 6750 / 7235 say; the service's S3 client with short timeouts."""

from __future__ import annotations

import pytest

from fraudloop.core.hours import HOUR_NS
from fraudloop.core.settings import Settings
from fraudloop.features.online import OnlineFeatureStore
from fraudloop.serving.__main__ import open_store
from fraudloop.serving.guards import bearer_token
from fraudloop.serving.live import LiveFeatures
from fraudloop.serving.shared_features import RedisFeatures

T0 = 1_523_000_000 * 10**9 // HOUR_NS * HOUR_NS


def tx(i: int, amount: float = 20.0, card: str = "C1", tid: str | None = None) -> dict:
    return {
        "transaction_id": tid or f"T{i}",
        "tx_datetime": T0 + i * 60 * 10**9,
        "customer_id": card,
        "terminal_id": f"M{i % 3}",
        "amount": amount,
    }


@pytest.fixture(params=["memory", "redis"])
def live(request):
    """max_observed -> the service's online features of the parametrised kind, on an empty
    state, with (observed in the overlay, peek at a probe's features) accessors."""

    def make(max_observed: int = 1000):
        if request.param == "memory":
            features = LiveFeatures(store=None, prefix="unused", max_observed=max_observed)
            features._online = OnlineFeatureStore(label_delay_hours=24, first_hour=None)
            features.peek = features._online.features
            features.in_overlay = lambda: features._online.observed
            return features
        url = request.getfixturevalue("redis_url")
        features = RedisFeatures(None, f"unused{max_observed}", url, 1.0, max_observed)
        empty = OnlineFeatureStore(label_delay_hours=24, first_hour=None)
        assert features.shared.load(empty, {"sha256": "empty", "state_hour": ""}) == "switched"
        features.current, features.healthy = features.shared.current(), True
        features.peek = features.shared.features
        features.in_overlay = features.shared.observed
        request.addfinalizer(features.close)
        return features

    return make


def test_a_retry_counts_once_and_a_known_id_cannot_block_the_real_transaction(live):
    features = live()
    features.features_and_observe(tx(1))
    features.features_and_observe(tx(1))  # a client retry: same id, same content
    assert features.in_overlay() == 1
    # someone sends T2's id first with other content: the real T2 is still observed
    features.features_and_observe(tx(2, amount=1.0))
    features.features_and_observe(tx(2, amount=55.0))
    assert features.in_overlay() == 3
    nxt = features.features_and_observe(tx(3))
    assert nxt["customer_nb_tx_1d"] == 4.0  # T1, both T2 contents, and itself


def test_the_overlay_is_bounded_and_forgets_the_oldest(live):
    bounded = live(max_observed=3)
    for i in range(10):
        bounded.features_and_observe(tx(i))
    assert bounded.in_overlay() == 3
    reference = live()
    for i in range(7, 10):
        reference.features_and_observe(tx(i))
    probe = tx(11)
    assert bounded.peek(probe) == reference.peek(probe)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.DEF-1", "abc.DEF-1"),
        ("bearer abc", "abc"),  # the scheme is case-insensitive (RFC 7235 2.1)
        ("BEARER  abc=", "abc="),
        ("abc", None),  # a raw token is not a bearer credential
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearer a b", None),
        ("Bearerabc", None),
        (None, None),
    ],
)
def test_bearer_credentials(header, token):
    assert bearer_token(header) == token


def test_the_services_s3_client_has_short_timeouts(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-only")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-only")
    settings = Settings(
        store_backend="s3", s3_bucket="b", s3_endpoint_url="http://127.0.0.1:9", aws_region="x"
    )
    store = open_store(settings, 1.5)
    config = store.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.5, 1.5)
    assert store.bucket == "b" and store.endpoint_url == "http://127.0.0.1:9"


def test_the_service_reads_evaluation_records_where_evaluation_writes_them():
    from fraudloop.model.evaluation import evaluation_key
    from fraudloop.serving.integrity import evaluation_record_key

    assert evaluation_record_key(7) == f"{evaluation_key(7)}.json"
