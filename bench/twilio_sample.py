"""Twilio's sample server (FastAPI + uvicorn), made ready to run as `bench.outside`'s peer.

    python -m bench.twilio_sample [--source GIT_DIR_OR_URL] [--commit SHA]

Prints the peer's command. The sample is fetched at the named commit into
`~/.cache/bench-peers/twilio-sample/` (never into the project), with a virtualenv of its own pinned
requirements, and changed in two places only, so that it can run against the fake
Realtime API and be compared on the same load: it reads its Realtime URL from
`OPENAI_REALTIME_URL`, and it speaks first (the line its own comment says to uncomment).
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

# Outside the project: its files are no part of ours (the layer checks read every .py under it).
HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bench-peers" / "twilio-sample"
SOURCE = "https://github.com/twilio-samples/speech-assistant-openai-realtime-api-python"
COMMIT = "d70e251"
WEBHOOK_PATH = "/incoming-call"

# (what the sample has, what it runs with instead)
CHANGES = (
    ('f"wss://api.openai.com/v1/realtime?model=gpt-realtime',
     'os.getenv("OPENAI_REALTIME_URL", "wss://api.openai.com/v1/realtime") + f"?model=gpt-realtime'),
    ("    # await send_initial_conversation_item(openai_ws)", "    await send_initial_conversation_item(openai_ws)"),
)


def _archive(source: str, commit: str) -> bytes:
    """The tree at `commit`, from a local git directory (bare or not) or a URL (cloned)."""
    path = Path(source)
    if not path.exists():
        path = HOME / "clone"
        if not path.exists():
            subprocess.run(["git", "clone", "--quiet", "--bare", source, str(path)], check=True)
    git_dir = path / ".git" if (path / ".git").exists() else path
    return subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar", commit],
                          check=True, capture_output=True).stdout


def prepare(source: str = SOURCE, commit: str = COMMIT) -> list[str]:
    """The command that serves the changed sample (PORT and OPENAI_* from the environment)."""
    tree = HOME / commit
    main = tree / "main.py"
    if not main.exists():
        tree.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(_archive(source, commit))) as tar:
            tar.extractall(tree, filter="data")
        text = main.read_text()
        for before, after in CHANGES:
            if text.count(before) != 1:
                raise SystemExit(f"the sample at {commit} has changed: {before!r} is not there once")
            text = text.replace(before, after)
        main.write_text(text)
    venv = HOME / "venv"
    python = venv / "bin" / "python"
    marker = venv / f".installed-{commit}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(tree / "requirements.txt")],
                       check=True)
        marker.touch()
    return [str(python), str(main)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--commit", default=COMMIT)
    args = parser.parse_args()
    print(" ".join(prepare(args.source, args.commit)))


if __name__ == "__main__":
    main()
