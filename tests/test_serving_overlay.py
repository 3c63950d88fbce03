"""The service's online overlay: de-duplicated on (id, content), bounded in size; the bearer
scheme read as RFC 6750 / 7235 say; the service's S3 client with short timeouts."""

from __future__ import annotations

import pytest

from fraudloop.core.hours import HOUR_NS
from fraudloop.core.settings import Settings
from fraudloop.features.compute import FEATURE_NAMES
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

    def make(max_observed: int = 1000, retry_answer_seconds: float = 600.0):
        if request.param == "memory":
            features = LiveFeatures(None, "unused", max_observed, retry_answer_seconds)
            features._online = OnlineFeatureStore(label_delay_hours=24, first_hour=None)
            features.peek = features._online.features
            features.in_overlay = lambda: features._online.observed
            return features
        url = request.getfixturevalue("redis_url")
        features = RedisFeatures(
            None, f"unused{max_observed}", url, 1.0, max_observed, retry_answer_seconds
        )
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


def test_a_retry_gets_the_features_of_its_first_scoring(live):
    """A retry (same id and content, alone or inside a batch, after later transactions of its
    card) is answered with the features its first request got, not as one more transaction of
    the card a moment after itself (which is what card testing looks like); and it is still
    counted once."""
    features = live()
    first = [features.features_and_observe(tx(i)) for i in range(3)]
    assert first[1]["customer_secs_since_prev_tx"] == 60.0
    assert features.features_and_observe(tx(1)) == first[1]
    batch = features.features_and_observe_many([tx(3), tx(1), tx(3), tx(0)])
    assert batch[1] == first[1] and batch[3] == first[0]
    assert batch[2] == batch[0]  # a copy inside the batch: the first copy's features
    assert features.in_overlay() == 4
    assert features.features_and_observe(tx(4))["customer_nb_tx_1h"] == 5.0
    # a reused id with other content is another transaction, of its own time: counted with
    # the card's transactions at or before it (T0, T1, itself), T1 a second 0 before it
    reused = features.features_and_observe(tx(1, amount=99.0))
    assert reused["customer_nb_tx_1h"] == 3.0 and reused["customer_secs_since_prev_tx"] == 0.0


def test_a_retry_on_the_other_replica_gets_the_first_replicas_answer(redis_url):
    """With Redis, a row is remembered before its request is answered: a retry sent at once to
    another replica sharing the store gets the same features."""
    replicas = [RedisFeatures(None, "shared", redis_url, 1.0) for _ in range(2)]
    try:
        empty = OnlineFeatureStore(label_delay_hours=24, first_hour=None)
        assert replicas[0].shared.load(empty, {"sha256": "e", "state_hour": ""}) == "switched"
        for features in replicas:
            features.current, features.healthy = features.shared.current(), True
        first = replicas[0].features_and_observe_many([tx(0), tx(1)])
        assert replicas[1].features_and_observe(tx(1)) == first[1]
        batch = replicas[1].features_and_observe_matrix([tx(2)] * 20)  # the array path
        assert (batch == batch[0]).all() and batch[0][FEATURE_NAMES.index("customer_nb_tx_1h")] == 3
        assert list(replicas[0].features_and_observe(tx(2)).values()) == batch[0].tolist()
        assert replicas[1].shared.observed() == 3
    finally:
        for features in replicas:
            features.close()


def test_a_retry_after_its_answer_is_forgotten_is_scored_as_the_next_transaction(live):
    features = live(retry_answer_seconds=0)
    features.features_and_observe(tx(0))
    again = features.features_and_observe(tx(0))
    assert again["customer_nb_tx_1h"] == 2.0 and again["customer_secs_since_prev_tx"] == 0.0
    assert features.in_overlay() == 1


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


def test_the_in_process_memory_of_answers_forgets_by_time_and_by_count():
    """Each remembered row lives `seconds`; beyond `limit` rows the oldest batches go first;
    the first answer of an identity stays its answer."""
    import numpy as np

    from fraudloop.features.retries import RecentAnswers

    now = [0.0]
    answers = RecentAnswers(seconds=10, limit=3, clock=lambda: now[0])
    rows = np.arange(8.0).reshape(4, 2)
    first, again = np.array([0, 1]), np.array([], dtype=int)
    answers.exchange(["a", "b", "c", "d"], rows, first, again)
    got = answers.exchange(["a", "b", "a", "x"], rows * 10, np.array([0, 1]), np.array([2, 3]))
    assert got[0].tolist() == [0.0, 1.0] and got[1] is None  # a kept its first row; x unknown
    now[0] = 5.0
    answers.exchange(["c", "d"], rows, np.array([0, 1]), again)  # 4 rows: over the limit
    answers.exchange([], rows, again, again)  # the oldest batch (a, b) goes
    assert answers.exchange(["a", "c"], rows, again, np.array([0, 1]))[0] is None
    assert len(answers) == 2
    now[0] = 15.0  # c and d were remembered at 5 s: gone at 15 s
    assert answers.exchange(["c"], rows, again, np.array([0])) == [None]
    assert len(answers) == 0
