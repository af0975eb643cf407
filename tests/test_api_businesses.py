"""The admin API's businesses, over HTTP against a live server."""
import requests

from tests.conftest import BUSINESS_NUMBER

HOURS = {"sun": [["09:00", "13:00"], ["16:00", "19:00"]], "fri": [["08:00", "12:00"]]}
FULL = dict(
    name="מספרת רחל", phone_numbers=["+972300000010", "+972300000011"], voice="coral",
    business_prompt="מספרה ברמת גן.", greeting="שלום, מספרת רחל.", outbound_greeting="היי, כאן מספרת רחל.",
    transfer_number="+972501112233", timezone="Asia/Jerusalem", working_hours=HOURS,
    max_concurrent_calls=3, use_customer_name=False, transfer_on_shutdown=True,
)


def api(live, path=""):
    return f"{live.base_url}/api/businesses{path}"


def create(live, **fields):
    response = requests.post(api(live), json={**FULL, **fields}, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_then_get_and_list_return_every_field(live_server):
    created = create(live_server)
    for name, value in FULL.items():
        assert created[name] == value, name
    assert created["created_at"].endswith("Z")

    fetched = requests.get(api(live_server, f"/{created['id']}"), timeout=5)
    assert fetched.status_code == 200
    assert fetched.json() == created
    listed = requests.get(api(live_server), timeout=5).json()["businesses"]
    assert [b["id"] for b in listed] == [created["id"]]


def test_create_with_only_a_name_gets_defaults(live_server):
    response = requests.post(api(live_server), json={"name": "Solo"}, timeout=5)
    assert response.status_code == 201
    body = response.json()
    assert body["phone_numbers"] == [] and body["voice"] == "alloy" and body["timezone"] == "Asia/Jerusalem"
    assert body["max_concurrent_calls"] == 5 and body["transfer_number"] is None
    assert body["transfer_on_shutdown"] is False


def test_patch_changes_only_the_given_fields(live_server):
    created = create(live_server)
    response = requests.patch(api(live_server, f"/{created['id']}"),
                              json={"voice": "marin", "transfer_number": None}, timeout=5)
    assert response.status_code == 200
    after = requests.get(api(live_server, f"/{created['id']}"), timeout=5).json()
    assert after["voice"] == "marin" and after["transfer_number"] is None
    unchanged = {k: v for k, v in created.items() if k not in ("voice", "transfer_number", "updated_at")}
    assert {k: after[k] for k in unchanged} == unchanged


def test_patch_replaces_the_numbers_and_frees_the_removed_one(live_server):
    first = create(live_server)
    response = requests.patch(api(live_server, f"/{first['id']}"),
                              json={"phone_numbers": ["+972300000011", "+972300000012"]}, timeout=5)
    assert response.status_code == 200
    assert response.json()["phone_numbers"] == ["+972300000011", "+972300000012"]
    # The dropped number is free for another business now.
    second = create(live_server, phone_numbers=["+972300000010"])
    assert second["phone_numbers"] == ["+972300000010"]


def test_a_number_of_another_business_is_a_conflict(live_server, business_id):
    response = requests.post(api(live_server), json={"name": "Copycat", "phone_numbers": [BUSINESS_NUMBER]}, timeout=5)
    assert response.status_code == 409
    assert BUSINESS_NUMBER in response.json()["error"]

    other = create(live_server)
    response = requests.patch(api(live_server, f"/{other['id']}"),
                              json={"phone_numbers": [BUSINESS_NUMBER]}, timeout=5)
    assert response.status_code == 409
    assert requests.get(api(live_server, f"/{other['id']}"), timeout=5).json()["phone_numbers"] == FULL["phone_numbers"]


def test_keeping_its_own_number_is_not_a_conflict(live_server, business_id):
    response = requests.patch(api(live_server, f"/{business_id}"),
                              json={"phone_numbers": [BUSINESS_NUMBER, "+972300000099"]}, timeout=5)
    assert response.status_code == 200
    assert response.json()["phone_numbers"] == [BUSINESS_NUMBER, "+972300000099"]


def test_invalid_fields_are_422_naming_each_field(live_server):
    bad = {
        "phone_numbers": ["0501234567"],
        "transfer_number": "+0123",
        "timezone": "Mars/Olympus",
        "voice": "robot",
        "working_hours": {"sun": [["19:00", "09:00"]]},
        "max_concurrent_calls": 0,
        "use_customer_name": "yes",
        "colour": "blue",
    }
    response = requests.post(api(live_server), json={"name": "X", **bad}, timeout=5)
    assert response.status_code == 422
    body = response.json()
    assert set(body["fields"]) == set(bad)
    assert body["fields"]["colour"] == "unknown field"
    assert "colour" in body["error"]
    assert requests.get(api(live_server), timeout=5).json()["businesses"] == []


def test_working_hours_shapes_that_are_refused(live_server, business_id):
    for hours in (
        ["09:00", "17:00"],
        {"sunday": [["09:00", "17:00"]]},
        {"mon": ["09:00", "17:00"]},
        {"mon": [["9:00", "17:00"]]},
        {"mon": [["09:00", "25:00"]]},
        {"mon": [["09:00", "13:00"], ["12:00", "15:00"]]},
        {"mon": [["09:00", "13:00", "15:00"]]},
    ):
        response = requests.patch(api(live_server, f"/{business_id}"), json={"working_hours": hours}, timeout=5)
        assert response.status_code == 422, hours
        assert "working_hours" in response.json()["fields"], hours
    response = requests.patch(api(live_server, f"/{business_id}"),
                              json={"working_hours": {"sat": [["20:00", "24:00"]], "sun": []}}, timeout=5)
    assert response.status_code == 200
    assert response.json()["working_hours"] == {"sun": [], "sat": [["20:00", "24:00"]]}


def test_create_without_a_name_and_patch_with_an_unknown_field_are_422(live_server, business_id):
    response = requests.post(api(live_server), json={"voice": "ash"}, timeout=5)
    assert response.status_code == 422 and response.json()["fields"] == {"name": "required"}
    response = requests.patch(api(live_server, f"/{business_id}"), json={"id": 7, "name": "New"}, timeout=5)
    assert response.status_code == 422 and response.json()["fields"] == {"id": "unknown field"}
    # Nothing of a refused PATCH is applied.
    assert requests.get(api(live_server, f"/{business_id}"), timeout=5).json()["name"] != "New"


def test_null_for_a_setting_that_cannot_be_empty_is_422(live_server, business_id):
    response = requests.patch(api(live_server, f"/{business_id}"),
                              json={"voice": None, "max_concurrent_calls": None, "webhook_url": None}, timeout=5)
    assert response.status_code == 422
    assert set(response.json()["fields"]) == {"voice", "max_concurrent_calls"}


def test_malformed_or_non_object_bodies_are_400(live_server, business_id):
    for body in ('{"name": ', "", '["name"]', "null"):
        response = requests.post(api(live_server), data=body, headers={"Content-Type": "application/json"}, timeout=5)
        assert response.status_code == 400, body
        assert "error" in response.json()
    response = requests.patch(api(live_server, f"/{business_id}"), data="{oops",
                              headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 400
    # Without the JSON content type the body is not read at all.
    response = requests.patch(api(live_server, f"/{business_id}"), data="{oops", timeout=5)
    assert response.status_code == 415 and "error" in response.json()


def test_unknown_business_is_404_for_every_verb(live_server):
    for method in ("get", "patch", "delete"):
        response = requests.request(method, api(live_server, "/999"), json={"name": "X"}, timeout=5)
        assert response.status_code == 404, method
        assert response.json() == {"error": "business 999 not found"}


def test_delete_removes_the_business_and_frees_its_numbers(live_server, business_id):
    response = requests.delete(api(live_server, f"/{business_id}"), timeout=5)
    assert response.status_code == 204
    assert requests.get(api(live_server, f"/{business_id}"), timeout=5).status_code == 404
    assert create(live_server, phone_numbers=[BUSINESS_NUMBER])["phone_numbers"] == [BUSINESS_NUMBER]


def test_an_unexpected_error_is_a_bare_json_500(live_server, business_id, monkeypatch):
    from server import api_answers

    def broken(_business):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(api_answers, "business_json", broken)
    response = requests.get(api(live_server, f"/{business_id}"), timeout=5)
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}


def test_prompt_preview_shows_each_layer_and_the_cut(live_server):
    long_prompt = ("המספרה שלנו מציעה תספורות וצבע. " * 150).strip()
    created = requests.post(f"{live_server.base_url}/api/businesses", timeout=5, json={
        "name": "מספרת אורן", "phone_numbers": ["+972311111111"], "business_prompt": long_prompt})
    assert created.status_code == 201
    assert any("cut" in w for w in created.json()["prompt_warnings"])
    business_id = created.json()["id"]
    preview = requests.get(f"{live_server.base_url}/api/businesses/{business_id}/prompt-preview", timeout=5).json()
    assert set(preview["layers"]) >= {"system", "business", "greeting", "transcription"}
    for layer in preview["layers"].values():
        assert layer["chars"] == len(layer["text"])
    assert preview["layers"]["business"]["chars"] <= 3000 + len("# מספרת אורן\n\n")
    assert any("cut" in w for w in preview["warnings"])
    outbound = requests.get(f"{live_server.base_url}/api/businesses/{business_id}/prompt-preview",
                            params={"direction": "outbound"}, timeout=5).json()
    assert outbound["direction"] == "outbound" and outbound["instructions"]["text"] != preview["instructions"]["text"]
    bad = requests.get(f"{live_server.base_url}/api/businesses/{business_id}/prompt-preview",
                       params={"direction": "sideways"}, timeout=5)
    assert bad.status_code == 422
    assert requests.get(f"{live_server.base_url}/api/businesses/999/prompt-preview", timeout=5).status_code == 404
