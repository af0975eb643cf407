import requests


def test_healthz_answers_json(live_server):
    response = requests.get(f"{live_server.base_url}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
