"""What job handlers share in one process."""
from __future__ import annotations

from dataclasses import dataclass

import requests
from openai import OpenAI

from services.settings import Settings
from services.store.db import Database


@dataclass(frozen=True)
class JobContext:
    db: Database
    settings: Settings
    openai: OpenAI
    http: requests.Session
