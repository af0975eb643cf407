"""The console's own words, Hebrew first, English on the switch; dates and times in Israel's zone."""
from __future__ import annotations

from datetime import datetime

from flask import g

from services.store.formats import business_zone
from services.store.models import as_utc

DEFAULT = "he"
LANGUAGES = ("he", "en")
ZONE = business_zone(None)  # Israel's: the console's clock, whatever the server's

LABELS: dict[str, tuple[str, str]] = {
    "console": ("קונסולת העסק", "Business console"),
    "sign_in": ("כניסה", "Sign in"),
    "sign_out": ("יציאה", "Sign out"),
    "secret": ("אסימון מנהל או מפתח API של העסק", "Admin token or the business's API key"),
    "wrong_secret": ("האסימון או המפתח שגויים", "Wrong token or key"),
    "too_many_attempts": ("יותר מדי ניסיונות כניסה. נסו שוב בעוד {minutes} דקות.",
                          "Too many sign-in attempts. Try again in {minutes} minutes."),
    "no_token_hint": ("ADMIN_API_TOKEN לא הוגדר: הקונסולה פתוחה רק מכתובת מקומית כשהשרת מאזין רק לה.",
                      "ADMIN_API_TOKEN is not set: the console opens to loopback only, when HOST is loopback."),
    "csrf_failed": ("הטופס פג תוקף או חסר אסימון אבטחה. רעננו את הדף ונסו שוב.",
                    "The form expired or lacks its security token. Reload the page and try again."),
    "host_not_allowed": ("שם השרת הזה אינו מורשה (ALLOWED_HOSTS)", "This Host is not allowed (ALLOWED_HOSTS)"),
    "error": ("שגיאה", "Error"),
    "back": ("חזרה", "Back"),
    "language_switch": ("English", "עברית"),
    "overview": ("סקירה", "Overview"),
    "calls": ("שיחות", "Calls"),
    "businesses": ("עסקים", "Businesses"),
    "settings": ("הגדרות העסק", "Business settings"),
    "admin": ("מנהל", "Admin"),
    "business": ("עסק", "Business"),
    "all": ("הכול", "All"),
    # call history
    "direction": ("כיוון", "Direction"),
    "inbound": ("נכנסת", "Inbound"),
    "outbound": ("יוצאת", "Outbound"),
    "status": ("מצב", "Status"),
    "end_reason": ("סיבת סיום", "End reason"),
    "date_from": ("מתאריך", "From"),
    "date_to": ("עד תאריך", "To"),
    "search": ("חיפוש בתמלול", "Search transcripts"),
    "filter": ("סינון", "Filter"),
    "started": ("התחלה", "Started"),
    "from_number": ("מספר המתקשר", "From"),
    "to_number": ("מספר היעד", "To"),
    "duration": ("משך", "Duration"),
    "cost": ("עלות", "Cost"),
    "no_calls": ("אין שיחות שמתאימות לסינון", "No calls match"),
    "newer": ("חדשות יותר", "Newer"),
    "older": ("ישנות יותר", "Older"),
    "page": ("עמוד", "Page"),
    "seconds": ("שנ׳", "s"),
    # call page
    "call": ("שיחה", "Call"),
    "timeline": ("ציר השיחה", "Timeline"),
    "speaker": ("דובר", "Speaker"),
    "time": ("שעה", "Time"),
    "text": ("טקסט", "Text"),
    "interrupted": ("נקטע", "Interrupted"),
    "latency": ("השהיה (מ״ש)", "Latency (ms)"),
    "caller": ("מתקשר", "Caller"),
    "agent": ("סוכן", "Agent"),
    "dtmf": ("מקשים", "Keypad"),
    "yes": ("כן", "Yes"),
    "no": ("לא", "No"),
    "summary": ("סיכום", "Summary"),
    "extraction": ("נתונים שחולצו", "Extracted fields"),
    "webhook_deliveries": ("משלוחי Webhook", "Webhook deliveries"),
    "attempt": ("ניסיון", "Attempt"),
    "result": ("תוצאה", "Result"),
    "none_yet": ("אין עדיין", "None yet"),
    "tool_calls": ("קריאות לכלים", "Tool calls"),
    "tool_calls_not_stored": ("קריאות לכלים עדיין לא נשמרות עם השיחה.", "Tool calls are not stored with the call yet."),
    "figures": ("מדדים", "Figures"),
    "greeting_latency": ("השהיית ברכה (מ״ש)", "Greeting latency (ms)"),
    "turn_latency": ("השהיית תור (מ״ש)", "Turn latency (ms)"),
    "barge_in_latency": ("השהיית קטיעה (מ״ש)", "Barge-in latency (ms)"),
    "tokens": ("טוקנים", "Tokens"),
    "post_call": ("עיבוד אחרי השיחה", "Post-call processing"),
    "reprocess": ("עיבוד מחדש", "Reprocess"),
    "reprocess_queued": ("השיחה נכנסה לתור לעיבוד מחדש", "The call is queued for reprocessing"),
    "reprocess_busy": ("השיחה מעובדת כרגע; נסו שוב כשיסתיים", "The call is being processed right now; try again when it is done"),
    "reprocess_live": ("השיחה עוד לא הסתיימה", "The call has not ended yet"),
    "recording": ("הקלטה", "Recording"),
    "no_recording": ("אין הקלטה", "No recording"),
    "transfer": ("העברה", "Transfer"),
    "call_not_found": ("השיחה לא נמצאה", "Call not found"),
    # live calls
    "live_calls": ("שיחות פעילות", "Live calls"),
    "no_live_calls": ("אין כרגע שיחות פעילות", "No calls in progress"),
    "state_greeting": ("ברכת פתיחה", "Greeting"),
    "state_listening": ("מקשיב למתקשר", "Listening"),
    "state_speaking": ("הסוכן מדבר", "Agent speaking"),
    "state_ending": ("נפרד ומנתק", "Saying goodbye"),
    "end_call": ("סיום השיחה", "End call"),
    "end_call_confirm": ("לסיים את השיחה? הסוכן ייפרד מהמתקשר וינתק.",
                         "End this call? The agent says goodbye and hangs up."),
    "end_call_requested": ("הסוכן ייפרד מהמתקשר וינתק את השיחה", "The agent says goodbye and hangs up"),
    "end_call_not_live": ("השיחה כבר הסתיימה", "The call has already ended"),
    "call_ended": ("השיחה הסתיימה", "The call ended"),
    "live_connecting": ("מתחבר…", "Connecting…"),
    "live_connected": ("מתעדכן בזמן אמת", "Updating live"),
    "live_lost": ("החיבור נותק, מתחבר מחדש…", "Connection lost, reconnecting…"),
    # overview
    "today": ("היום", "Today"),
    "this_week": ("השבוע", "This week"),
    "answered": ("נענו", "Answered"),
    "refused_by_limits": ("נדחו בגלל מגבלה", "Refused by limits"),
    "transferred": ("הועברו לנציג", "Transferred"),
    "ended_by": ("מי סיים", "Ended by"),
    "ended_by_agent": ("הסוכן", "The agent"),
    "ended_by_caller": ("המתקשר", "The caller"),
    "ended_by_fault": ("תקלה", "A fault"),
    "ended_other": ("אחר", "Other"),
    "p50": ("חציון", "p50"),
    "p95": ("אחוזון 95", "p95"),
    "cost_per_call": ("עלות לשיחה", "Cost per call"),
    "cost_per_minute": ("עלות לדקה", "Cost per minute"),
    "calls_per_day": ("שיחות ביום, 14 הימים האחרונים", "Calls per day, last 14 days"),
    "latency_title": ("השהיות השבוע", "Latency this week"),
    "outcomes_title": ("תוצאות השבוע", "Outcomes this week"),
    "cost_title": ("עלות השבוע", "Cost this week"),
    "no_data": ("—", "—"),
    # settings
    "save": ("שמירה", "Save"),
    "saved": ("ההגדרות נשמרו", "Settings saved"),
    "not_saved": ("ההגדרות לא נשמרו: יש שדות לתקן", "Not saved: some fields need fixing"),
    "name": ("שם העסק", "Business name"),
    "phone_numbers": ("מספרי טלפון (אחד בכל שורה, E.164)", "Phone numbers (one a line, E.164)"),
    "voice": ("קול", "Voice"),
    "business_prompt": ("הנחיות לסוכן (פרומפט העסק)", "Agent instructions (business prompt)"),
    "prompt_meter": ("{count} מתוך {cap} תווים", "{count} of {cap} characters"),
    "prompt_over_cap": ("מעבר ל־{cap} תווים ההנחיות ייחתכו בסוף המשפט האחרון שנכנס",
                        "Past {cap} characters the prompt is cut after the last sentence that fits"),
    "greeting": ("ברכה בשיחה נכנסת", "Inbound greeting"),
    "outbound_greeting": ("ברכה בשיחה יוצאת", "Outbound greeting"),
    "transfer_number": ("מספר להעברה לנציג", "Transfer number"),
    "transfer_on_shutdown": ("בעדכון שרת, להעביר שיחות פעילות לנציג", "On a deploy, transfer live calls"),
    "timezone": ("אזור זמן", "Time zone"),
    "working_hours": ("שעות פעילות", "Working hours"),
    "day_holiday": ("חג", "Holiday"), "day_eve": ("ערב חג", "Holiday eve"),
    "special_days_hint": ("חגי ישראל וערביהם (כולל יום העצמאות ויום הזיכרון). ריק: ברירת המחדל; \"סגור\": סגור.",
                          "Israel's holidays and their eves (Independence Day and Memorial Day included). Empty: the default; \"closed\": closed."),
    "special_holiday_default": ("סגור", "closed"), "special_eve_default": ("עד 13:00", "until 13:00"),
    "working_hours_hint": ("טווחים מופרדים בפסיק; יום ריק: סגור. למשל:", "Ranges separated by commas; an empty day is closed. E.g."),
    "day_sun": ("ראשון", "Sunday"), "day_mon": ("שני", "Monday"), "day_tue": ("שלישי", "Tuesday"),
    "day_wed": ("רביעי", "Wednesday"), "day_thu": ("חמישי", "Thursday"), "day_fri": ("שישי", "Friday"),
    "day_sat": ("שבת", "Saturday"),
    "max_concurrent_calls": ("שיחות בו־זמנית לכל היותר", "Most calls at once"),
    "use_customer_name": ("לפנות למתקשר בשמו", "Call the caller by name"),
    "voicemail_message": ("הודעה למשיבון", "Voicemail message"),
    "appointment_minutes": ("אורך תור (דקות)", "Appointment length (minutes)"),
    "webhook_url": ("כתובת Webhook", "Webhook URL"),
    "webhook_secret": ("סוד ה־Webhook (ריק: ללא שינוי)", "Webhook secret (empty: unchanged)"),
    "current_secret": ("הסוד הנוכחי, לבדיקת החתימות אצל המקבל", "The current secret, for the receiver to check signatures"),
    "record_calls": ("להקליט שיחות", "Record calls"),
    "recording_notice": ("להודיע למתקשר על ההקלטה", "Tell the caller the call is recorded"),
    "prompt_preview": ("מה תקבל השיחה הבאה", "What the next call gets"),
    "preview_saved": ("לפי ההגדרות השמורות", "From the saved settings"),
    "preview_draft": ("לפי הטופס, לפני שמירה", "From the form, not saved yet"),
    "preview_invalid": ("יש בטופס ערך לא תקין; התצוגה לא עודכנה", "The form has an invalid value; the preview is not updated"),
    "layer": ("שכבה", "Layer"),
    "chars": ("תווים", "characters"),
    "warnings": ("אזהרות", "Warnings"),
    "instructions": ("ההנחיות המלאות", "Full instructions"),
    "no_businesses": ("אין עסקים עדיין", "No businesses yet"),
    "number_taken": ("המספר {number} שייך לעסק אחר", "{number} already belongs to another business"),
}


def language(value: object) -> str:
    return value if value in LANGUAGES else DEFAULT


def direction(lang: str) -> str:
    return "rtl" if lang == "he" else "ltr"


def t(key: str, **values) -> str:
    he, en = LABELS[key]
    text = en if g.get("lang") == "en" else he
    return text.format(**values) if values else text


def local_time(value: datetime | None, fmt: str = "%d.%m.%Y %H:%M") -> str:
    value = as_utc(value)
    return "" if value is None else value.astimezone(ZONE).strftime(fmt)
