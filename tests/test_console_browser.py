"""The console in headless Chromium: sign in, edit the prompt and watch its length meter and preview, and a
screenshot of every page at a desktop and a phone width (in tests/screenshots/, not committed).

Needs Debian's `chromium` and `chromium-driver` (apt-get install chromium chromium-driver);
skipped, saying so, where they are not installed.
"""
from __future__ import annotations

import dataclasses
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

import prompts
from services.store.models import Business, Call, PhoneNumber, Turn
from tests.console_client import ADMIN_TOKEN, israel_time
from tests.fakes.waiting import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium not installed: apt-get install chromium chromium-driver")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--lang=he", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def console_server(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, admin_api_token=ADMIN_TOKEN))
    with live.db.session() as session:
        business = Business(name="מספרת הים", business_prompt="מספרה בחיפה. פתוחים א׳-ה׳.",
                            phone_numbers=[PhoneNumber(e164="+972300000001")])
        session.add(business)
        session.flush()
        started = israel_time("2025-03-04 10:00")
        call = Call(call_sid="CAbrowser", business_id=business.id, status="completed", end_reason="caller_goodbye",
                    started_at=started, ended_at=started + timedelta(seconds=42), duration_s=42.0, cost_usd=0.021,
                    stream_sid="MZbrowser", summary="הלקוחה קבעה תור לתספורת ביום שלישי בעשר.",
                    metrics={"greeting_latency_ms": 780.0, "response_latency_ms": [620.0, 880.0]},
                    extraction={"name": "דנה", "intent": "appointment"})
        call.turns = [
            Turn(speaker="agent", text="שלום, הגעתם למספרת הים, איך אפשר לעזור?", started_at=started, latency_ms=780.0),
            Turn(speaker="caller", text="רציתי לקבוע תור לתספורת", started_at=started + timedelta(seconds=4)),
            Turn(speaker="agent", text="בשמחה. ליום שלישי בעשר מתאים?", started_at=started + timedelta(seconds=6),
                 latency_ms=620.0, interrupted=True),
        ]
        session.add(call)
        session.flush()
        live.business_id = business.id
    return live


def shoot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    for label, (width, height) in WIDTHS.items():
        driver.set_window_size(width, height)
        full_height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, max(height, min(full_height + 120, 4000)))
        driver.save_screenshot(str(SCREENSHOTS / f"{name}-{label}.png"))
    driver.set_window_size(*WIDTHS["desktop"])


def test_sign_in_and_the_prompt_meter_in_chromium(browser, console_server):
    from selenium.webdriver.common.by import By

    base = console_server.base_url
    browser.get(f"{base}/console/")
    assert "/console/sign-in" in browser.current_url
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    shoot(browser, "sign-in")
    browser.find_element(By.ID, "secret").send_keys("wrong")
    browser.find_element(By.ID, "sign-in").click()
    # A click returns before the next page has loaded: wait for it rather than race it.
    wait_for(lambda: browser.find_elements(By.ID, "sign-in-error"), 15, message="the refusal of a wrong token")
    assert browser.find_element(By.ID, "sign-in-error").is_displayed()
    browser.find_element(By.ID, "secret").send_keys(ADMIN_TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(lambda: browser.current_url.rstrip("/").endswith("/console"), 15, message="the overview after sign-in")
    browser.get(f"{base}/console/?day=2025-03-04")
    shoot(browser, "overview")
    browser.get(f"{base}/console/calls")
    shoot(browser, "calls")
    browser.find_element(By.LINK_TEXT, "04.03.2025 10:00").click()
    wait_for(lambda: "/console/calls/CAbrowser" in browser.current_url and
             browser.find_elements(By.ID, "timeline"), 15, message="the call page")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")) == 3
    shoot(browser, "call")
    browser.get(f"{base}/console/businesses")
    shoot(browser, "businesses")

    browser.get(f"{base}/console/businesses/{console_server.business_id}")
    area = browser.find_element(By.ID, "business_prompt")
    meter = browser.find_element(By.ID, "prompt-meter")
    cap = prompts.BUSINESS_PROMPT_CAP
    start = len(area.get_attribute("value"))
    assert meter.text == f"{start} מתוך {cap} תווים"
    area.send_keys(" תספורת גברים ב־60 ₪.")
    wait_for(lambda: meter.text == f"{start + 21} מתוך {cap} תווים", 15, message="the meter to count the typing")
    assert "over" not in meter.get_attribute("class")
    assert not browser.find_element(By.ID, "prompt-over-cap").is_displayed()
    # Past the cap: the meter turns and the cut is announced.
    browser.execute_script("arguments[0].value = arguments[0].value + 'א'.repeat(arguments[1]);", area, cap)
    area.send_keys("ב")
    wait_for(lambda: "over" in meter.get_attribute("class"), 15, message="the meter to show the cap passed")
    assert browser.find_element(By.ID, "prompt-over-cap").is_displayed()
    assert int(meter.get_attribute("data-count")) == start + 21 + cap + 1
    # The preview follows, unsaved: the builder's cut shows in its warnings.
    warnings = browser.find_element(By.CSS_SELECTOR, '[data-warnings="inbound"]')
    wait_for(lambda: "business prompt cut from" in warnings.get_attribute("textContent"), 15,
             message="the preview to show the cut")
    shoot(browser, "settings-over-cap")
    # Back under the cap, saved: the preview shows what the next call gets.
    browser.execute_script("arguments[0].value = 'מספרה בחיפה. תספורת גברים ב־60 ₪.';", area)
    area.send_keys(" ")
    wait_for(lambda: "over" not in meter.get_attribute("class"), 15, message="the meter back under the cap")
    layer = browser.find_element(By.CSS_SELECTOR, 'pre[data-layer="inbound-business"]')
    wait_for(lambda: "תספורת גברים ב־60 ₪." in layer.get_attribute("textContent"), 15,
             message="the preview to show the edited prompt before it is saved")
    browser.find_element(By.ID, "save").click()
    wait_for(lambda: "ההגדרות נשמרו" in browser.page_source, 15, message="the settings to save")
    browser.execute_script("document.querySelectorAll('#prompt-preview details').forEach(d => d.open = true);")
    layer = browser.find_element(By.CSS_SELECTOR, 'pre[data-layer="inbound-business"]')
    assert "תספורת גברים ב־60 ₪." in layer.text
    shoot(browser, "settings")
    browser.find_element(By.ID, "sign-out").click()
    wait_for(lambda: "/console/sign-in" in browser.current_url, 15, message="the sign-in page after sign-out")
    browser.get(f"{base}/console/calls")
    assert "/console/sign-in" in browser.current_url


def test_the_new_business_form_and_the_webhook_test_in_chromium(browser, console_server):
    from selenium.webdriver.common.by import By

    base = console_server.base_url
    browser.get(f"{base}/console/sign-in")
    browser.find_element(By.ID, "secret").send_keys(ADMIN_TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(lambda: browser.current_url.rstrip("/").endswith("/console"), 15, message="the overview after sign-in")
    browser.get(f"{base}/console/businesses")
    browser.find_element(By.ID, "new-business").click()
    wait_for(lambda: browser.current_url.endswith("/console/businesses/new"), 15, message="the new-business form")
    shoot(browser, "new-business")
    browser.find_element(By.ID, "name").send_keys("מוסך הצפון")
    browser.find_element(By.ID, "phone_numbers").send_keys("+972300000055")
    # Served on loopback: the test event is refused, and the page says why.
    browser.find_element(By.ID, "webhook_url").send_keys("https://localhost:9/hooks/calls")
    browser.find_element(By.ID, "save").click()
    wait_for(lambda: "העסק נוצר" in browser.page_source, 15, message="the new business's settings page")
    browser.find_element(By.ID, "send-webhook-test").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#webhook-tests tbody tr"), 15,
             message="the test event's result")
    shown = browser.find_element(By.CSS_SELECTOR, ".flash.error").text
    assert shown.startswith("אירוע הבדיקה לא נמסר: \u2068refused: localhost resolves to ")
    browser.execute_script("document.getElementById('webhook-test').scrollIntoView();")
    shoot(browser, "webhook-test")


def test_live_calls_page_shows_a_live_calls_transcript_as_it_is_spoken(browser, make_harness):
    from selenium.webdriver.common.by import By

    from tests.fakes.realtime_server import RealtimeScript, Reply

    greeting = Reply("שלום, הגעתם למספרת הים, איך אפשר לעזור?", 1500)
    answer = Reply("בשמחה. ליום שלישי בעשר מתאים?", 4000)
    harness = make_harness(RealtimeScript(responses=[greeting, answer]), admin_api_token=ADMIN_TOKEN,
                           business={"name": "מספרת הים"})
    base = harness.live.base_url
    browser.get(f"{base}/console/sign-in")
    browser.find_element(By.ID, "secret").send_keys(ADMIN_TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(lambda: browser.current_url.rstrip("/").endswith("/console"), 15, message="the overview after sign-in")
    browser.find_element(By.ID, "nav-live").click()
    wait_for(lambda: browser.find_elements(By.ID, "no-live-calls"), 15, message="the live page")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    wait_for(lambda: browser.find_element(By.ID, "live-status").get_attribute("data-live") == "1", 15,
             message="the page's event stream to open")
    assert browser.find_element(By.ID, "no-live-calls").is_displayed()

    caller = harness.call()
    card = f'article.live-call[data-call-sid="{caller.call_sid}"]'

    def said() -> list[str]:
        return [node.text for node in browser.find_elements(By.CSS_SELECTOR, f"{card} .said")]

    # The call appears without a reload, then each turn as it is stored.
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, card), 15, message="the call's card")
    wait_for(lambda: said() == [greeting.text], 15, message="the greeting on the page")
    assert not browser.find_element(By.ID, "no-live-calls").is_displayed()
    caller.speak(700)
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, f"{card} .state").get_attribute("data-state")
             == "speaking", 15, message="the agent speaking on the page")
    assert browser.find_element(By.CSS_SELECTOR, f"{card} .state").text == "הסוכן מדבר"
    wait_for(lambda: said() == [greeting.text, "שלום", answer.text], 15, message="the caller's turn and the answer")
    duration = browser.find_element(By.CSS_SELECTOR, f"{card} [data-duration]").text
    assert len(duration) == 5 and duration[2] == ":", duration
    assert browser.find_element(By.CSS_SELECTOR, f"{card} .end-call button").is_enabled()
    shoot(browser, "live")

    caller.stop()
    harness.wait_ended(caller.call_sid, timeout=10)
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, f"{card} .state").get_attribute("data-state") == "ended",
             15, message="the call's end on the page")
