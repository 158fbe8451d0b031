"""schemathesis against the served /openapi.json: every response conforms to the spec, none is 5xx.

Driven through schemathesis's Python API (its pytest plugin does not support pytest 9 yet) against
the app in process on SQLite shards: schemathesis runs the app's lifespan on a loop of its own and
calls it directly. Without the sweeper: on that loop's thread it would draw from ``random`` while
hypothesis generates cases, which hypothesis refuses. One hypothesis run per operation, a few hundred
cases in all.
"""

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.python.asgi import shutdown_lifespans

from kvstore.http.app import create_app
from tests.support.asgi import sqlite_settings

CASES_PER_OPERATION = 50
NO_SWEEPER = {"enabled": False}
# Conformance and "no 5xx". Not schemathesis's positive_data_acceptance: it counts any 4xx other
# than 401/403/404/409/429 as a rejection, but a 412 for a failed If-Match is a correct answer to
# a well-formed request, and which one a random request meets depends on the key's state.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def test_every_response_conforms_to_the_spec(tmp_path: Path) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(sqlite_settings(tmp_path, sweeper=NO_SWEEPER)))
    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10  # the key methods, listing, batch, txn, probes, metrics, openapi

        for operation in operations:

            @settings(max_examples=CASES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def conforms(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS)

            conforms()
    finally:
        shutdown_lifespans()  # the app's shutdown: sweepers stopped, pools closed
