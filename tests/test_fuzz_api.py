"""The JSON APIs, fuzzed from their own OpenAPI descriptions (schemathesis) as a logged-in
manager — a device's, and the city hub's: whatever a script sends, what the description
allows and what it does not, is answered, never met with a server error. Bounded (a fixed
number of calls per operation) and derandomized, so a run in CI is the same run every time."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests import test_hub_web, test_requests
from tests.webui_helpers import Api, staff

server, app = test_requests.server, test_requests.app
hub = test_hub_web.hub

EXAMPLES = 8  # calls per operation and mode: about 900 on a device, two or three minutes on the CI machine
# The session itself is left alone: logging out (or in as someone else) would fuzz the rest anonymously.
LEFT_ALONE = {("POST", "/api/v1/session"), ("DELETE", "/api/v1/session")}


def fuzz(app, manager: Api) -> tuple[Counter, dict]:
    """Every operation of ``app``'s description, in both of schemathesis's modes, as
    ``manager``: the answers' statuses, counted, and the first server error of each operation."""
    headers = {"X-CSRFToken": manager.token}
    cookies = {"session": manager.client.get_cookie("session").value}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    answers, errors = Counter(), {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in LEFT_ALONE:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def call(case):
                try:
                    status = case.call(headers=headers, cookies=cookies).status_code
                except Exception as exc:  # the app's own error: TESTING raises it here rather than answer 500
                    status = f"{type(exc).__name__}: {str(exc)[:120]}"
                answers[status if isinstance(status, int) else 500] += 1
                if not isinstance(status, int) or status >= 500:
                    errors.setdefault(f"{case.method} {case.path}", (case.formatted_path, case.body, status))

            try:
                call()
            except Unsatisfiable:  # nothing to break in it (a GET without parameters, in NEGATIVE mode)
                pass
    return answers, errors


@pytest.mark.slow
def test_the_api_answers_whatever_it_is_sent_without_a_server_error(server, app, vault):
    staff(app.test_client(), app)  # people and sections: ids that name something
    manager = Api(app.test_client())
    assert manager.login("yamada").status_code == 200
    started = time.monotonic()
    answers, errors = fuzz(app, manager)
    print(f"schemathesis, a device's API: {answers.total()} calls in {time.monotonic() - started:.0f} s: {answers}")
    assert errors == {}
    assert answers.total() > 500 and answers[401] == 0  # the manager's throughout
    assert manager.get("/api/v1/me").status_code == 200  # the manager's throughout: nothing went untested


@pytest.mark.hub
def test_the_hubs_api_answers_whatever_it_is_sent_without_a_server_error(hub):
    manager = Api(hub.test_client())
    assert manager.login("yamada").status_code == 200
    started = time.monotonic()
    answers, errors = fuzz(hub, manager)
    print(f"schemathesis, the hub's API: {answers.total()} calls in {time.monotonic() - started:.0f} s: {answers}")
    assert errors == {}
    assert answers.total() > 100 and answers[401] == 0
    assert manager.get("/api/v1/me").status_code == 200


def test_the_request_bodies_say_their_types_limits_and_required_fields(app):
    """What the fuzzer generates from: each body as its view's Form reads it."""
    spec = app.test_client().get("/api/v1/openapi.json").get_json()

    def body(path: str) -> dict:
        request_body = spec["paths"][path]["post"]["requestBody"]
        schema = request_body["content"]["application/json"]["schema"]
        assert request_body["required"] is bool(schema.get("required")), path
        return schema

    decision = body("/api/v1/requests/{request_id}/decision")
    assert "decision" in decision["required"]
    hours = decision["properties"]["valid_hours"]
    assert hours["maximum"] == 24 * 14 and hours["minimum"] == 0 and "number" in hours["type"]
    assert body("/api/v1/people/{user_id}/operator")["required"] == ["designate"]  # true or false, said outright
    new = body("/api/v1/requests")
    assert set(new["required"]) >= {"purpose", "reason", "recording"}
    assert new["properties"]["reason"]["maxLength"] == 2000 and new["properties"]["recording"]["maxItems"] == 500
    assert new["properties"]["start"]["maxLength"] == 10_000  # what the API takes at most, said
    assert body("/api/v1/people")["properties"]["section_id"]["minimum"] == 1
