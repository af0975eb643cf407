"""A browser's part in the console tests, without a browser: cookies, CSRF tokens, forms posted."""
from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import requests

ADMIN_TOKEN = "console-admin-token-for-tests"
ISRAEL = ZoneInfo("Asia/Jerusalem")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def israel_time(text: str) -> datetime:
    """"2025-03-04 00:30" on Israel's clock, in UTC as rows store times."""
    return datetime.fromisoformat(text).replace(tzinfo=ISRAEL).astimezone(timezone.utc)


class ConsoleClient:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = requests.Session()

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.base_url + path, allow_redirects=False, timeout=10, **kwargs)

    def post(self, path: str, data: dict | None = None, *, csrf_from: str | None = "/console/sign-in",
             **kwargs) -> requests.Response:
        """POST a form, with the CSRF token of the page at `csrf_from` (None: without one)."""
        data = dict(data or {})
        if csrf_from is not None:
            data["csrf_token"] = self.csrf_token(csrf_from)
        return self.http.post(self.base_url + path, data=data, allow_redirects=False, timeout=10, **kwargs)

    def csrf_token(self, path: str) -> str:
        page = self.http.get(self.base_url + path, timeout=10)
        match = _CSRF.search(page.text)
        assert match, f"no CSRF token on {path} ({page.status_code})"
        return match.group(1)

    def sign_in(self, secret: str = ADMIN_TOKEN) -> requests.Response:
        return self.post("/console/sign-in", {"secret": secret})


def texts_of(page: str, pattern: str) -> list[str]:
    """Every match of `pattern`'s one group in `page`, unescaped and stripped."""
    return [html.unescape(m).strip() for m in re.findall(pattern, page, flags=re.S)]


def listed_call_sids(page: str) -> list[str]:
    return texts_of(page, r'<tr data-call-sid="([^"]+)"')


def business_key(live, business_id: int) -> str:
    """A real API key of the business, made in the live server's store; the raw key."""
    from services.store import api_keys

    with live.db.session() as session:
        return api_keys.create_key(session, business_id, "console test").raw
