"""Talk to your agent in headless Chromium: the page's microphone is a WAV file this test writes
(Chromium's fake capture device), its agent is the fake Realtime API; the agent's audio must reach
the page (its AnalyserNode's level, which the page keeps in data attributes) and the call must be
stored with its turns, as a test call. Screenshots at a desktop and a phone width, in
tests/screenshots/ (not committed).

Needs Debian's `chromium` and `chromium-driver`; skipped, saying so, where they are not installed.
"""
from __future__ import annotations

import math
import struct
import wave

import pytest

from services.store.models import Call
from tests.console_client import ADMIN_TOKEN
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.waiting import wait_for
from tests.test_console_browser import CHROMEDRIVER, CHROMIUM, shoot

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 1500)
ANSWER = Reply("בשמחה, מתי נוח לך להגיע?", 1500)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium not installed: apt-get install chromium chromium-driver")


def write_speech_wav(path, rate: int = 48000) -> None:
    """What the page's microphone hears, looped by Chromium: 2.5 s of quiet (the greeting's time), then
    1.2 s of a voice-like tone."""
    frames = bytearray(b"\0\0" * int(rate * 2.5))
    for n in range(int(rate * 1.2)):
        t = n / rate
        value = 0.45 * math.sin(2 * math.pi * 220 * t) + 0.2 * math.sin(2 * math.pi * 660 * t)
        frames += struct.pack("<h", int(value * 32767))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))


@pytest.fixture
def talking_browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    wav = tmp_path / "caller.wav"
    write_speech_wav(wav)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=he",
                 "--window-size=1280,900", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]]


def test_talking_to_the_agent_from_chromium(talking_browser, make_harness):
    from selenium.webdriver.common.by import By

    browser = talking_browser
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER]), admin_api_token=ADMIN_TOKEN,
                     twilio_auth_token="talk-browser-twilio-token")
    base = h.live.base_url
    browser.get(f"{base}/console/sign-in")
    browser.find_element(By.ID, "secret").send_keys(ADMIN_TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(lambda: browser.current_url.rstrip("/").endswith("/console"), 15, message="the overview after sign-in")
    browser.find_element(By.ID, "nav-talk").click()
    wait_for(lambda: browser.find_elements(By.ID, "talk"), 15, message="the talk page")
    page = browser.find_element(By.ID, "talk")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    shoot(browser, "talk")

    browser.find_element(By.ID, "talk-start").click()
    wait_for(lambda: page.get_attribute("data-state") in ("live", "failed"), 20,
             message=lambda: f"the call to start (state {page.get_attribute('data-state')}, "
                             f"{browser.find_element(By.ID, 'talk-status').text}, {_console_errors(browser)})")
    assert page.get_attribute("data-state") == "live", browser.find_element(By.ID, "talk-status").text
    call_sid = page.get_attribute("data-call-sid")
    # The agent's greeting, decoded and played, shows in the page's analyser.
    wait_for(lambda: float(page.get_attribute("data-agent-peak")) > 0.05, 20,
             message=lambda: f"the agent's audio in the page (peak {page.get_attribute('data-agent-peak')}, "
                             f"{page.get_attribute('data-media-received')} media received)")

    def stored_speakers() -> set[str]:
        with h.live.db.session() as session:
            call = session.query(Call).filter_by(call_sid=call_sid).one()
            return {turn.speaker for turn in call.turns if turn.text}

    # The microphone's tone is the caller speaking: the fake hears it, and the agent answers.
    wait_for(lambda: {"agent", "caller"} <= stored_speakers(), 30, message="a caller and an agent turn stored")
    assert int(page.get_attribute("data-media-sent")) > 50 and float(page.get_attribute("data-mic-peak")) > 0.01
    # The agent's marks come back as its audio has played (after the turns are stored, on a busy
    # machine): the server knows what was heard.
    wait_for(lambda: int(page.get_attribute("data-marks-echoed")) > 0, 20,
             message=lambda: f"a mark echoed ({page.get_attribute('data-media-received')} media received, "
                             f"{page.get_attribute('data-clears')} clears)")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#talk-transcript li.turn-agent"), 15,
             message="the transcript on the page")
    shoot(browser, "talk-live")
    browser.find_element(By.ID, "talk-hang-up").click()
    wait_for(lambda: page.get_attribute("data-state") == "ended", 15, message="the page to show the call ended")
    stored = h.wait_ended(call_sid, timeout=15)
    assert stored.row.is_test and stored.row.end_reason == "caller_hangup"
    # The greeting as heard (all of it, or up to where the caller's tone cut it), and the caller's turn.
    assert stored.turns[0][0] == "agent" and stored.turns[0][1] and GREETING.text.startswith(stored.turns[0][1])
    assert any(speaker == "caller" and text for speaker, text, _ in stored.turns)
    assert browser.find_element(By.ID, "talk-call-link").is_displayed()
    errors = _console_errors(browser)
    assert errors == [], errors
    shoot(browser, "talk-ended")
