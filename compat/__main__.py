"""`scripts/compat`: every Realtime client library against real voicegate servers, one turn each.

    scripts/compat                      # all clients
    scripts/compat --only pipecat,livekit
    scripts/compat --list

Installs the pinned clients (`compat/pins.toml`) into their own environments when needed,
makes a throwaway CA and certificate, starts `voicegate serve` twice (plain and TLS; local
engine, memory storage), and runs each client's driver: one PASS/FAIL line per client with the
reason, then `N passed, N failed`. Exits 1 when a client failed, 2 when the servers did not start.
Drivers' output and the servers' logs stay in `compat/.build/run/`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from compat.clients import CLIENTS, VOICE, Client
from compat.gateway import Gateway, GatewayError, start_gateway
from compat.install import COMPAT, ROOT, InstallError, Pins, load_pins, node_env, python_env
from compat.pages import PageServer
from compat.tls import make_certificates
from compat.verdict import Verdict, run_driver

RUN_DIR = COMPAT / ".build" / "run"
DRIVERS = COMPAT / "drivers"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/compat", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated words; clients whose name has one")
    parser.add_argument("--list", action="store_true", help="list the clients and exit")
    parser.add_argument(
        "--set", action="append", default=[], metavar="VAR=VALUE",
        help="a voicegate setting for both servers (repeatable), e.g. "
        "VOICE_CLIENT_CAN_SET=voice,speed,turn_detection,instructions",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = dict(item.partition("=")[::2] for item in args.set)
    if any(not name for name in settings):
        parser.error("--set takes VAR=VALUE")
    clients = _select(args.only)
    if args.list or not clients:
        print("\n".join(c.name for c in CLIENTS))
        return 0 if clients else 2
    started = time.monotonic()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    pins = load_pins()
    commands, problems = _prepare({c.runtime for c in clients}, pins)
    certs = make_certificates(RUN_DIR)
    servers: dict[bool, Gateway] = {}
    try:
        for tls in sorted({c.tls for c in clients}):
            servers[tls] = start_gateway(
                RUN_DIR, "tls" if tls else "plain", ca=certs.ca if tls else None,
                cert=certs.cert if tls else None, key=certs.key if tls else None,
                settings=settings,
            )  # fmt: skip
    except GatewayError as exc:
        for server in servers.values():
            server.stop()
        print(f"voicegate did not start: {exc}", file=sys.stderr)
        return 2
    setup = time.monotonic() - started
    print(f"voicegate {', '.join(s.http for s in servers.values())} (local engine); "
          f"clients asked for voice {VOICE!r}; setup {setup:.1f} s")  # fmt: skip
    env = _driver_env(certs.ca)
    verdicts: list[Verdict] = []
    keys: list[str] = []
    try:
        with PageServer(COMPAT / ".build" / "web") as pages:
            for client in clients:
                if client.runtime in problems:
                    verdict = Verdict(False, problems[client.runtime], 0.0)
                else:
                    gateway = servers[client.tls]
                    verdict = _run(client, gateway, commands[client.runtime], env, pages, keys)
                verdicts.append(verdict)
                _line(client.name, verdict)
    finally:
        exits = {server.log.name: server.stop() for server in servers.values()}
    failed = sum(not v.passed for v in verdicts)
    failed += _check_gateway_logs(list(servers.values()), exits, keys)
    print(f"\n{len(verdicts) - sum(not v.passed for v in verdicts)} passed, {failed} failed")
    print(f"({time.monotonic() - started:.1f} s; logs in {RUN_DIR.relative_to(ROOT)})")
    return 1 if failed else 0


def _select(only: str | None) -> list[Client]:
    if not only:
        return list(CLIENTS)
    words = [w.strip().lower() for w in only.split(",") if w.strip()]
    return [c for c in CLIENTS if any(w in c.name.lower() for w in words)]


def _prepare(runtimes: set[str], pins: Pins) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The command prefix per runtime, and why a runtime cannot run (a missing prerequisite)."""
    commands: dict[str, list[str]] = {}
    problems: dict[str, str] = {}
    log = _progress
    if "python" in runtimes:
        try:
            commands["python"] = [str(python_env(pins, log))]
        except InstallError as exc:
            problems["python"] = f"Python clients not installed: {exc}"
    if runtimes & {"node", "browser"}:
        try:
            node = str(node_env(pins, log))
            commands["node"] = [node]
            commands["browser"] = [node, str(DRIVERS / "node" / "browser.mjs")]
        except InstallError as exc:
            problems["node"] = problems["browser"] = f"prerequisite missing: {exc}"
    if "browser" in runtimes and "browser" not in problems and _chromium() is None:
        problems["browser"] = (
            f"prerequisite missing: CHROMIUM={os.environ['CHROMIUM']} is not an executable"
            if os.environ.get("CHROMIUM")
            else "prerequisite missing: Chromium not found (install Debian's: apt-get install "
            "chromium, or set CHROMIUM=/path/to/chromium)"
        )
    return commands, problems


def _chromium() -> str | None:
    """`$CHROMIUM` when set, else a `chromium` on PATH or Debian's."""
    chosen = os.environ.get("CHROMIUM")
    candidates = [chosen] if chosen else [shutil.which("chromium"), "/usr/bin/chromium"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _driver_env(ca: Path) -> dict[str, str]:
    """The drivers' environment: no OpenAI settings of the developer's (every client gets its
    URL and key explicitly), the run's CA trusted as each runtime documents it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "VIRTUAL_ENV"))}
    env["NODE_EXTRA_CA_CERTS"] = str(ca)
    env["SSL_CERT_FILE"] = str(ca)
    chromium = _chromium()
    if chromium:
        env["CHROMIUM"] = chromium
    return env


def _run(client: Client, gateway: Gateway, prefix: list[str], env: dict[str, str],
         pages: PageServer, keys: list[str]) -> Verdict:  # fmt: skip
    user = "compat-" + "-".join(re.findall(r"[a-z0-9]+", client.name.lower()))
    try:
        key = gateway.client_secret(user) if client.ephemeral else gateway.token(user)
    except GatewayError as exc:
        return Verdict(False, f"could not get a client secret: {exc}", 0.0)
    keys.append(key)
    driver = [] if client.runtime == "browser" else [str(DRIVERS / client.driver)]
    command = [*prefix, *driver, *client.arguments(gateway, key, pages.url)]
    log = RUN_DIR / f"{user}.log"
    return run_driver(command, env, log, VOICE, key)


def _line(name: str, verdict: Verdict) -> None:
    word = "PASS" if verdict.passed else "FAIL"
    print(f"{word}  {name:<34} {verdict.reason}  ({verdict.seconds:.1f} s)", flush=True)


def _check_gateway_logs(servers: list[Gateway], exits: dict[str, int | None],
                        keys: list[str]) -> int:  # fmt: skip
    """FAIL lines for what the servers did wrong meanwhile; how many."""
    failed = 0
    for server in servers:
        text = server.log.read_text(errors="replace")
        errors = [ln for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln]
        problems = [f"{len(errors)} error line(s), first: {errors[0][:200]}"] if errors else []
        if any(key in text for key in keys):
            problems.append("a client's credential is in the log")
        # uvicorn re-raises the signal once it has shut down: -SIGTERM is a clean exit too.
        if exits[server.log.name] not in (0, -signal.SIGTERM):
            problems.append(f"exit {exits[server.log.name]} after SIGTERM (None: killed)")
        for problem in problems:
            print(f"FAIL  {'voicegate log ' + server.log.name:<34} {problem}")
        failed += len(problems)
    return failed


def _progress(message: str) -> None:
    print(f"==> {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
