"""One client's run: its driver as a subprocess, and the verdict on what the driver observed.

The driver only reports (`COMPAT-RESULT {json}`); the verdict is here, the same for every
client: audio came back, the response ended, no error event reached the client, and the
`session.updated` the gateway sent shows the voice the client asked for (its `session.update`
also carried instructions, a tool and a model, which the gateway must ignore without an error).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compat.install import ROOT

__all__ = ["DRIVER_TIMEOUT", "Verdict", "judge", "run_driver"]

DRIVER_TIMEOUT = 90.0  # a cold import of Pipecat or LiveKit takes seconds on a busy machine
MIN_AUDIO_BYTES = 24_000  # 0.5 s of PCM16 24 kHz: the local engine echoes the whole turn
RESULT_PREFIX = "COMPAT-RESULT "


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    seconds: float


def run_driver(
    command: list[str], env: dict[str, str], log: Path, expected_voice: str, secret: str
) -> Verdict:
    """Run a driver; `secret` (its key) is masked in the log kept of its output."""
    started = time.monotonic()
    see = f"(log: {log.relative_to(ROOT)})"
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        _write_log(log, command, _text(exc.stdout), _text(exc.stderr), secret)
        reason = f"driver still running after {DRIVER_TIMEOUT:.0f} s {see}"
        return Verdict(False, reason, time.monotonic() - started)
    seconds = time.monotonic() - started
    _write_log(log, command, done.stdout, done.stderr, secret)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1].replace(secret, "***")
        reason = f"driver exited {done.returncode} without a result: {last[:200]} {see}"
        return Verdict(False, reason, seconds)
    observed = json.loads(lines[-1][len(RESULT_PREFIX) :])
    passed, reason = judge(observed, expected_voice)
    return Verdict(passed, reason if passed else f"{reason} {see}", seconds)


def judge(observed: dict[str, Any], expected_voice: str) -> tuple[bool, str]:
    """(passed, reason) for what a driver observed."""
    notes = "; ".join(observed.get("notes") or [])
    errors: list[str] = observed.get("errors") or []
    audio = int(observed.get("audio_bytes") or 0)
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return False, f"error reached the client: {errors[0]}{more}"
    if not observed.get("session_updates"):
        return False, "no session.updated for the client's session.update" + _also(notes)
    if observed.get("voice") != expected_voice:
        return False, (f"session.updated shows voice {observed.get('voice')!r}, "
                       f"the client asked for {expected_voice!r}")  # fmt: skip
    if audio < MIN_AUDIO_BYTES:
        return False, f"{audio} bytes of audio back, expected at least {MIN_AUDIO_BYTES}" + _also(
            notes
        )
    if not observed.get("response_done"):
        return False, "the response never ended (no response.done)" + _also(notes)
    return True, f"{audio / 48_000:.1f} s of audio back, voice {expected_voice} applied"


def _also(notes: str) -> str:
    return f": {notes}" if notes else ""


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _write_log(log: Path, command: list[str], stdout: str, stderr: str, secret: str) -> None:
    # Only the driver's name: its arguments hold the client's credential.
    text = f"$ {Path(command[1]).name}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n"
    log.write_text(text.replace(secret, "***"))
