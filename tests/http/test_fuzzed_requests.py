"""Property-based fuzzing of the HTTP API: schemathesis generates requests from the service's own
OpenAPI spec, hypothesis generates request bodies for the parser. No input may produce a 5xx or
an error without a JSON `{"message"}`, and the service keeps scoring afterwards."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fuzz import fuzz_api
from service.azureml.contract import parse_request
from service.errors import ScoringError


def test_generated_requests_never_get_a_server_error(service) -> None:
    report = fuzz_api(service.url, examples_per_operation=40)
    assert report.cases >= 40  # /score gets them all: / and /ready take no input
    assert report.failures == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"data": st.lists(st.text(max_size=60) | st.binary(max_size=60).map(bytes.hex),
                                            max_size=3),
                           "key_id": st.text(max_size=20)},
                          optional={"conn_str": st.text(max_size=60), "container": st.text(max_size=20)}
                          ).map(json.dumps),
)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_the_request_parser_only_ever_raises_client_errors(body) -> None:
    try:
        parse_request(body)
    except ScoringError as error:
        assert 400 <= error.status_code < 500 and error.message


def test_the_service_still_scores_after_fuzzing(service, azureml_session) -> None:
    scores = azureml_session.scores(np.linspace(0, 1, 784))
    assert len(scores) == 10
