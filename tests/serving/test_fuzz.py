"""Property-based fuzzing of every operation from the server's own OpenAPI schema (schemathesis).

For each operation, valid and invalid inputs (positive and negative generation), at most
``MAX_EXAMPLES`` of each, against the real server: no 5xx, and every response (status
code, content type, body) matches what the schema documents. Hypothesis is driven
directly (``as_strategy`` + ``given``) so the test does not depend on schemathesis'
pytest plugin internals.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

MAX_EXAMPLES = 20
WITH_INPUT = [  # positive and negative examples
    ("GET", "/v1/users/{user_id}/recommendations"),
    ("POST", "/v1/recommendations"),
    ("GET", "/v1/users/{user_id}/next"),
    ("POST", "/v1/next"),
    ("GET", "/v1/items/{item_id}/similar"),
    ("POST", "/v1/events"),
    ("POST", "/v1/users/{user_id}/propensity"),
    ("GET", "/v1/users/{user_id}/return"),
    ("GET", "/v1/catalog/search"),  # the web console's routes
    ("GET", "/v1/catalog/items/{item_id}"),
    ("GET", "/v1/catalog/items/{item_id}/{kind}"),
    ("GET", "/v1/users/{user_id}/history"),
]
NO_INPUT = [  # nothing to make invalid: positive only
    ("POST", "/v1/admin/reload"),
    ("GET", "/v1/ping"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/console/session"),
    ("GET", "/v1/console/experiments"),
    ("GET", "/v1/console/model"),
]
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
CASES = [(m, p, POSITIVE) for m, p in WITH_INPUT + NO_INPUT] + [(m, p, NEGATIVE) for m, p in WITH_INPUT]


@pytest.fixture(scope="module")
def api_schema(api):
    schema = schemathesis.openapi.from_url(f"{api.base}/openapi.json", timeout=10)
    # the key is sent with every call (below); auth itself is covered by test_auth.py
    schema.config.generation.update(with_security_parameters=False)
    return schema


def test_every_operation_is_fuzzed(api_schema):
    in_schema = {(method.upper(), path) for path, ops in api_schema.raw_schema["paths"].items() for method in ops}
    assert in_schema == set(WITH_INPUT + NO_INPUT)


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_operation_matches_schema(api_schema, api, keys, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(base_url=api.base, headers={"X-API-Key": keys["admin"]}, timeout=30)

    check()
