"""The call's prompts: each rule written once, each prompt built once per call.

Layers, their builders and their text (in `prompts/text/`):

| layer | builder | text |
| --- | --- | --- |
| system: how every call is handled (English, no business content) | `build_system_layer` | `system.md` |
| business: the business's own prompt, capped | `build_business_layer` | the database, else `business_default.he.md` |
| crm: what the records say about the caller (data only) | `build_crm_layer` | `crm.md` |
| greeting: the first response's instruction | `build_greeting_layer` | the database, else `greeting.md` |
| transcription: Hebrew accuracy prompt | `build_transcription_prompt` | `transcription.he.txt` |
| extraction: post-call data extraction | `build_extraction_prompt` | `extraction.md` |
| summary: post-call Hebrew summary | `build_summary_prompt` | `summary.md` |
| no conversation: summary and outcome when the caller never spoke | `no_conversation_texts` | `no_conversation.he.md` |

`assemble_call_prompts` puts them together for one call; its result never changes after.
"""
from prompts.assembly import CallPrompts, assemble_call_prompts, crm_context_message, prompt_preview
from prompts.crm import CrmFacts, build_crm_layer, usable_name
from prompts.layers import (
    BUSINESS_PROMPT_CAP,
    build_business_layer,
    build_extraction_prompt,
    build_greeting_layer,
    build_system_layer,
    build_transcription_prompt,
    greeting_text,
)
from prompts.post_call import build_summary_prompt, no_conversation_texts
from prompts.today import DayFacts, TodayFacts, build_today_layer

__all__ = [
    "BUSINESS_PROMPT_CAP", "CallPrompts", "CrmFacts", "DayFacts", "TodayFacts", "assemble_call_prompts",
    "build_business_layer", "build_today_layer",
    "build_crm_layer", "build_extraction_prompt", "build_greeting_layer", "build_summary_prompt",
    "build_system_layer", "build_transcription_prompt", "crm_context_message", "greeting_text",
    "no_conversation_texts", "prompt_preview", "usable_name",
]
