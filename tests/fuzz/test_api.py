"""Schemathesis against the scoring service's own OpenAPI document, over real HTTP.

The service runs as in the serving tests (``tests.servers.service_thread``) on a stored world
with a production model, a canary at half the traffic, and both tokens set: scoring needs
``FRAUDLOOP_SCORE_TOKEN``, the admin endpoints ``FRAUDLOOP_ADMIN_TOKEN``. Every operation of
the document is fuzzed three ways:

- ``positive``: requests the schema allows, with the right token; schemathesis' own checks
  (no 5xx, status codes and content types as documented, answers that match the response
  schema, valid data accepted) must hold;
- ``negative``: requests the schema forbids, with the right token: a 4xx, never a 5xx;
- ``auth``: requests the schema allows with a missing, malformed or wrong credential: 401 on
  every protected operation, and the open ones still answer.

Every 4xx must name what is wrong: a 422 lists each error with its ``loc`` (``body``,
``header``, ``query`` or ``path`` and the field), any other 4xx says in its ``detail`` which
part of the request it refuses (the ``Authorization`` header, the body, ...).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.core.failures import FailureGroup

from fraudloop.core.store import LocalObjectStore
from fraudloop.delivery import rollout
from fraudloop.model.registry import ModelRegistry
from tests.fuzz.budget import TALLY, Findings, fuzz_settings, seeded
from tests.servers import TOKEN, config, service_thread

pytestmark = pytest.mark.slow

SCORE_TOKEN = "test-score-token"  # a test-only value, never a real secret
#: every operation of the document, and the token it needs (None: open)
OPERATIONS = {
    "POST /v1/score": SCORE_TOKEN,
    "POST /v1/score/batch": SCORE_TOKEN,
    "GET /healthz": None,
    "GET /readyz": None,
    "GET /v1/deployment": None,
    "GET /metrics": None,
    "POST /admin/reload": TOKEN,
    "POST /admin/traffic": TOKEN,
}
#: the operations with a body or parameters (the others have nothing to send wrong but the
#: credential, which the auth test covers)
TAKES_INPUT = ("POST /v1/score", "POST /v1/score/batch", "POST /admin/traffic")
EXAMPLES = {"positive": 25, "negative": 25, "auth": 10}
LOCATIONS = {"body", "header", "query", "path", "cookie"}
#: what a 4xx other than 422 must mention: the part of the request it refuses
REFUSED_PART = {401: "Authorization", 403: "FRAUDLOOP_ADMIN_TOKEN", 408: "body", 413: "body"}


@pytest.fixture(scope="module")
def api(deployable_world, tmp_path_factory):
    """(base url, schema loaded from the running service's /openapi.json)."""
    root, _ = deployable_world
    home = tmp_path_factory.mktemp("fuzz-api") / "home"
    shutil.copytree(root, home)
    store = LocalObjectStore(home)
    registry = ModelRegistry(store)
    registry.promote(1, to="production", actor="test", reason="fuzz setup")
    rollout.start(store, registry, 3, actor="test", reason="fuzz setup: a canary")
    rollout.set_share(store, "fraud", 0.5, actor="test", reason="fuzz setup: half the traffic")
    serve = config(score_token=SCORE_TOKEN, max_body_bytes=256 * 1024)
    with service_thread(store, serve) as (base, _app):
        yield base, schemathesis.openapi.from_url(f"{base}/openapi.json")


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def assert_names_the_field(response) -> None:
    """A 4xx says which part of the request is wrong."""
    body = response.json()
    detail = body.get("detail")
    if response.status_code == 422:
        assert isinstance(detail, list) and detail, body
        for error in detail:
            loc = error.get("loc")
            assert loc and loc[0] in LOCATIONS and error.get("msg"), body
        return
    assert isinstance(detail, str) and detail, body
    part = REFUSED_PART.get(response.status_code)
    if part is not None:
        assert part in detail, body


def _run(strategy, mode: str, label: str, check) -> None:
    """Run ``check(drawn, findings)`` on the examples of ``strategy``; every case that breaks
    the property is recorded (not only the first), then the test fails on any."""
    findings = Findings(f"api {mode}")

    @seeded
    @fuzz_settings(EXAMPLES[mode])
    @given(drawn=strategy)
    def run(drawn):
        TALLY[f"api {mode}"] += 1
        TALLY[f"api {mode}: answered {check(drawn, findings)}"] += 1

    run()
    findings.check()


def _verdict(findings: Findings, case, response, problem: str | None) -> None:
    if response.status_code >= 500:
        findings.add(
            "5xx", f"{response.status_code} {response.text[:300]}\n{case.as_curl_command()}"
        )
    elif problem:
        findings.add("contract", f"{problem}\n{case.as_curl_command()}")


def _field_problem(response) -> str | None:
    if 400 <= response.status_code < 500:
        try:
            assert_names_the_field(response)
        except AssertionError:
            return f"{response.status_code} does not name the field: {response.text[:300]}"
    return None


def _operations(schema) -> dict:
    return {op.label: op for result in schema.get_all_operations() if (op := result.ok())}


def test_every_operation_is_fuzzed(api):
    """The lists above are the document's: a new endpoint or parameter must be fuzzed too."""
    _, schema = api
    operations = _operations(schema)
    assert set(operations) == set(OPERATIONS)
    takes_input = {
        label
        for label, op in operations.items()
        if op.body or any(p.name.lower() != "authorization" for p in op.iter_parameters())
    }
    assert takes_input == set(TAKES_INPUT)
    protected = {label for label, op in operations.items() if any(op.security.iter_parameters())}
    assert protected == {label for label, token in OPERATIONS.items() if token}


def _recent(drawn) -> object:
    """Most positive cases get a time inside the service's window (the schema cannot say
    "not before the online state, not after now"), so they reach the model; the rest keep the
    generated time and must be refused on ``tx_datetime``."""
    case, shift, seconds = drawn
    if shift and isinstance(case.body, dict):
        txs = case.body.get("transactions", [case.body])
        for tx in txs if isinstance(txs, list) else []:
            if isinstance(tx, dict) and "tx_datetime" in tx:
                when = datetime.now(UTC) - timedelta(seconds=seconds)
                tx["tx_datetime"] = when.isoformat()
    return case


def _only_on_tx_datetime(response) -> bool:
    detail = response.json().get("detail")
    return isinstance(detail, list) and all(e["loc"][-1] == "tx_datetime" for e in detail)


@pytest.mark.parametrize("label", OPERATIONS)
def test_allowed_requests_conform(api, label):
    base, schema = api
    method, path = label.split(" ")
    operation = schema[path][method]
    headers = _bearer(OPERATIONS[label])
    strategy = st.tuples(
        operation.as_strategy(GenerationMode.POSITIVE),
        st.integers(0, 4).map(bool),
        st.floats(0, 3600),
    ).map(_recent)

    def check(case, findings):
        response = case.call(base_url=base, headers=headers, timeout=60)
        problem = _field_problem(response)
        if response.status_code == 422 and not _only_on_tx_datetime(response):
            problem = f"a request the schema allows was refused: {response.text[:300]}"
        try:
            case.validate_response(
                response, headers=headers, excluded_checks=[checks.positive_data_acceptance]
            )
        except FailureGroup as error:
            problem = problem or str(error)[:600]
        _verdict(findings, case, response, problem)
        return response.status_code

    _run(strategy, "positive", label, check)


@pytest.mark.parametrize("label", TAKES_INPUT)
def test_forbidden_requests_get_a_4xx_naming_the_field(api, label):
    base, schema = api
    method, path = label.split(" ")
    operation = schema[path][method]
    headers = _bearer(OPERATIONS[label])

    def check(case, findings):
        response = case.call(base_url=base, headers=headers, timeout=60)
        problem = _field_problem(response)
        try:
            case.validate_response(response, headers=headers)
        except FailureGroup as error:
            problem = problem or str(error)[:600]
        _verdict(findings, case, response, problem)
        return response.status_code

    _run(operation.as_strategy(GenerationMode.NEGATIVE), "negative", label, check)


#: what an HTTP client can put in a header value (RFC 9110 field-value: visible ASCII, space
#: and tab inside); anything else is refused by the HTTP parser before the app sees it
FIELD_VALUE = st.from_regex(r"[!-~]([!-~ \t]{0,58}[!-~])?", fullmatch=True)
TOKEN68 = st.from_regex(r"[A-Za-z0-9\-._~+/]{1,60}=*", fullmatch=True)
#: credentials that must not pass: none, another scheme, a malformed one, a wrong token
BAD_CREDENTIALS = st.one_of(
    st.just({}),
    st.builds(lambda v: {"Authorization": f"Basic {v}"}, FIELD_VALUE),
    st.builds(lambda v: {"Authorization": v}, FIELD_VALUE),
    st.builds(lambda v: {"Authorization": v}, st.sampled_from([TOKEN, SCORE_TOKEN])),
    st.builds(
        lambda scheme, v: {"Authorization": f"{scheme} {v}"},
        st.sampled_from(["Bearer", "bearer", "BEARER"]),
        TOKEN68.filter(lambda t: t not in (TOKEN, SCORE_TOKEN)),
    ),
)


@pytest.mark.parametrize("label", OPERATIONS)
def test_missing_or_wrong_credentials_are_refused(api, label):
    base, schema = api
    method, path = label.split(" ")
    operation = schema[path][method]
    protected = OPERATIONS[label] is not None
    strategy = st.tuples(operation.as_strategy(GenerationMode.POSITIVE), BAD_CREDENTIALS)

    def check(drawn, findings):
        case, headers = drawn
        # only the credential drawn here: none generated from the security scheme
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        response = case.call(base_url=base, headers=headers, timeout=60)
        problem = _field_problem(response)
        if protected and response.status_code != 401:
            problem = f"{response.status_code} with credentials {headers!r}: {response.text[:200]}"
        elif protected and response.headers.get("www-authenticate") != ["Bearer"]:
            problem = "a 401 without WWW-Authenticate: Bearer"
        _verdict(findings, case, response, problem)
        return response.status_code

    _run(strategy, "auth", label, check)


# ---- what the fuzzing found, pinned as plain examples


@pytest.mark.parametrize("path", ["/v1/score", "/v1/score/batch", "/admin/traffic"])
def test_a_body_that_is_not_utf8_is_a_422_on_body(api, path):
    """Found by the negative set: a batch body of bytes that are not UTF-8 was a 500 (the
    error echoed the raw bytes back, and they could not be encoded); a single or admin body
    was a bare 400 that named nothing."""
    base, _ = api
    token = OPERATIONS[f"POST {path}"]
    response = httpx.post(
        f"{base}{path}",
        content=b'{"transactions": [\xf8\xd7]}',
        headers={**_bearer(token), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert [e["loc"][0] for e in response.json()["detail"]] == ["body"]


def test_the_batch_body_schema_resolves_inside_the_document(api):
    """Found by the positive set: the batch body's items referred to ``#/$defs/Transaction``,
    which does not exist in the OpenAPI document, so no client (nor schemathesis) could build
    a batch from it."""
    base, _ = api
    document = httpx.get(f"{base}/openapi.json").json()
    body = document["paths"]["/v1/score/batch"]["post"]["requestBody"]
    items = body["content"]["application/json"]["schema"]["properties"]["transactions"]["items"]
    assert items == {"$ref": "#/components/schemas/Transaction"}
    assert "Transaction" in document["components"]["schemas"]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+03:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_outside_the_calendar_in_utc_is_a_422_on_tx_datetime(api, when):
    """Found by the long positive set: a valid date-time whose UTC conversion leaves years
    1..9999 was a 500 (OverflowError)."""
    base, _ = api
    tx = {"transaction_id": "t1", "tx_datetime": when, "customer_id": "c", "terminal_id": "t"}
    headers = _bearer(SCORE_TOKEN)
    single = httpx.post(f"{base}/v1/score", json={**tx, "amount": 1.0}, headers=headers)
    batch = httpx.post(
        f"{base}/v1/score/batch", json={"transactions": [{**tx, "amount": 1.0}]}, headers=headers
    )
    assert single.status_code == batch.status_code == 422, (single.text, batch.text)
    assert single.json()["detail"][0]["loc"] == ["body", "tx_datetime"]
    assert batch.json()["detail"][0]["loc"] == ["body", "transactions", 0, "tx_datetime"]
