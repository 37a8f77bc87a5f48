"""The Node.js `ws` relay baseline: install its npm packages, check its native helpers, run it.

`bench/node_relay.mjs` runs on the machine's `node` with `ws`, `bufferutil` and `utf-8-validate`
at the versions pinned below, installed with `npm` into `bench/.node/` (git-ignored) the first
time, and again whenever a pin changes. Without node or npm (or when the install or the native
helpers fail) the relay benchmark skips the node runs and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
MODULES = BENCH / ".node"
SCRIPT = BENCH / "node_relay.mjs"
PACKAGES = {"ws": "8.23.0", "bufferutil": "4.1.0", "utf-8-validate": "6.0.6"}
INSTALL_TIMEOUT = 300.0


@dataclass
class NodeBaseline:
    """The command that runs the relay, or why it cannot run; the helpers it was checked with."""

    command: list[str] = field(default_factory=list)
    skipped: str | None = None
    helpers: dict[str, Any] = field(default_factory=dict)

    def relay_command(self, upstream_url: str) -> list[str]:
        return [self.command[0], str(SCRIPT), upstream_url, str(MODULES)]


def installed() -> bool:
    """Every pinned package is in bench/.node at its pinned version."""
    for name, version in PACKAGES.items():
        manifest = MODULES / "node_modules" / name / "package.json"
        try:
            if json.loads(manifest.read_text())["version"] != version:
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def install(npm: str) -> None:
    MODULES.mkdir(exist_ok=True)
    manifest = MODULES / "package.json"
    if not manifest.exists():
        manifest.write_text('{"private": true, "description": "voicegate bench: node relay"}\n')
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    result = subprocess.run(
        [npm, "install", "--prefix", str(MODULES), "--save-exact", "--no-audit", "--no-fund",
         "--loglevel=error", *specs],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT, cwd=MODULES,
    )  # fmt: skip
    if result.returncode != 0 or not installed():
        raise RuntimeError(f"npm install {' '.join(specs)} failed:\n{result.stderr[-2000:]}")


def prepare(log: Callable[[str], None]) -> NodeBaseline:
    """Install if needed, then check that ws really uses native helpers; never raises."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        return _skip(log, "node not found on PATH")
    if not installed():
        if npm is None:
            return _skip(log, "npm not found on PATH (needed once to install ws)")
        log(f"relay: installing {', '.join(f'{n}@{v}' for n, v in PACKAGES.items())} "
            f"into {MODULES.relative_to(BENCH.parent)} with npm")  # fmt: skip
        try:
            install(npm)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            return _skip(log, f"npm install failed: {str(exc)[:300]}")
    try:
        check = subprocess.run(
            [node, str(SCRIPT), "--check", str(MODULES)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        helpers: dict[str, Any] = json.loads(check.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return _skip(log, f"node relay check failed: {exc!r}")
    if check.returncode != 0:
        return _skip(log, f"native helpers not loaded: {check.stdout.strip()[:300]}")
    log(
        f"relay: node {helpers['node']}, ws {helpers['ws']}, bufferutil {helpers['bufferutil']} "
        f"and utf-8-validate {helpers['utf-8-validate']} load native binaries; ws masks with "
        f"{helpers['ws masks with']}, validates UTF-8 with {helpers['ws validates UTF-8 with']}"
    )
    return NodeBaseline(command=[node], helpers=helpers)


def _skip(log: Callable[[str], None], reason: str) -> NodeBaseline:
    log(f"relay: the Node ws baseline is skipped: {reason}")
    return NodeBaseline(skipped=reason)
