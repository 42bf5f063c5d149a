"""schemathesis over /openapi.json against a real server on loopback: no 5xx, no response that breaks
the documented schema, whatever the generated input (the /curate bodies included: they are described)."""
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from helpers import CURATE, tiny_server

pytestmark = [pytest.mark.slow, pytest.mark.network_local]
AUTH = {"Authorization": f"Bearer {CURATE}"}


@pytest.fixture(scope="module")
def live(tiny_index, tmp_path_factory):
    srv = tiny_server(tiny_index(30, seed=31), tmp_path_factory.mktemp("fuzz"), "--max-files", "4", "--max-file-bytes",
                      "200000")
    yield srv
    assert httpx.get(srv.url + "/healthz").status_code == 200  # still healthy after the fuzzing
    srv.stop()


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(live.url + "/openapi.json", headers=AUTH)




def test_the_curate_bodies_are_in_the_schema(live):
    body = httpx.get(live.url + "/openapi.json", headers=AUTH).json()["paths"]["/curate"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)


def test_no_server_error_and_no_response_off_schema(api_schema):
    """Every operation, a bounded number of generated cases each (hypothesis drives schemathesis'
    strategies directly: its pytest plugin does not load under this pytest)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def fuzz(case):
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error, response_schema_conformance],
                                   timeout=30)
        fuzz()
