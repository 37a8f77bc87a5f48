"""The suite's own environments, at the versions of `pins.toml`, installed when missing or stale.

Python clients go into `.venv-compat/` (one environment for all: they resolve together, and the
drivers run in it as subprocesses, so none of their dependencies reach voicegate's `.venv`).
npm packages go into `compat/node_modules/`, and the browser pages' code is bundled by esbuild
into `compat/.build/web/`. All three are git-ignored. Each step is skipped when what it would
make is already there at the pinned versions, so a warm run installs nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMPAT", "ROOT", "InstallError", "Pins", "load_pins", "node_env", "python_env"]

COMPAT = Path(__file__).resolve().parent
ROOT = COMPAT.parent
VENV = ROOT / ".venv-compat"
NODE_MODULES = COMPAT / "node_modules"
WEB_SOURCES = COMPAT / "drivers" / "web"
WEB_BUILD = COMPAT / ".build" / "web"
INSTALL_TIMEOUT = 900.0

Log = Callable[[str], None]


class InstallError(Exception):
    """An environment could not be set up; the message says what to do."""


@dataclass(frozen=True)
class Pins:
    python: dict[str, str]
    npm: dict[str, str]

    def python_specs(self) -> list[str]:
        return [f"{name}=={version}" for name, version in self.python.items()]

    def npm_specs(self) -> list[str]:
        return [f"{name}@{version}" for name, version in self.npm.items()]


def load_pins() -> Pins:
    data = tomllib.loads((COMPAT / "pins.toml").read_text())
    return Pins(python=dict(data["python"]), npm=dict(data["npm"]))


def python_env(pins: Pins, log: Log) -> Path:
    """The interpreter of `.venv-compat`, with every Python pin installed."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".pins.json"
    wanted = json.dumps(pins.python, sort_keys=True)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        log(f"creating {VENV.relative_to(ROOT)}")
        _run([sys.executable, "-m", "venv", "--clear", str(VENV)], "python -m venv")
    stamp.unlink(missing_ok=True)
    log(f"installing into {VENV.relative_to(ROOT)}: {' '.join(pins.python_specs())}")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", *pins.python_specs()], "pip install")
    check = subprocess.run([*pip, "check"], capture_output=True, text=True)
    if check.returncode != 0:
        log(f"warning: pip check in .venv-compat: {check.stdout.strip()[:500]}")
    stamp.write_text(wanted)
    return python


def node_env(pins: Pins, log: Log) -> Path:
    """`node`, with the npm pins in compat/node_modules and the browser pages bundled."""
    node = shutil.which("node")
    if node is None:
        raise InstallError("node not found on PATH: install Node.js 18 or newer (and npm)")
    if not _npm_installed(pins):
        npm = shutil.which("npm")
        if npm is None:
            raise InstallError("npm not found on PATH: needed once to install the npm clients")
        log(f"installing into {NODE_MODULES.relative_to(ROOT)}: {' '.join(pins.npm_specs())}")
        _run(
            [npm, "install", "--prefix", str(COMPAT), "--no-save", "--no-package-lock",
             "--no-audit", "--no-fund", "--loglevel=error", *pins.npm_specs()],
            "npm install", cwd=COMPAT,
        )  # fmt: skip
        if not _npm_installed(pins):
            raise InstallError("npm install finished but the pinned versions are not all there")
    _bundle_pages(log)
    return Path(node)


def _npm_installed(pins: Pins) -> bool:
    for name, version in pins.npm.items():
        manifest = NODE_MODULES / name / "package.json"
        try:
            if json.loads(manifest.read_text())["version"] != version:
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def _bundle_pages(log: Log) -> None:
    """Each `drivers/web/*.js` bundled for the browser, beside a copy of the HTML pages."""
    WEB_BUILD.mkdir(parents=True, exist_ok=True)
    esbuild = NODE_MODULES / ".bin" / "esbuild"
    stamp = NODE_MODULES / "esbuild" / "package.json"
    for source in sorted(WEB_SOURCES.iterdir()):
        target = WEB_BUILD / source.name
        if source.suffix == ".html":
            shutil.copyfile(source, target)
        elif source.suffix == ".js":
            newest = max(source.stat().st_mtime, stamp.stat().st_mtime)
            if target.exists() and target.stat().st_mtime >= newest:
                continue
            log(f"bundling {source.relative_to(ROOT)} with esbuild")
            _run(
                [str(esbuild), str(source), "--bundle", "--format=esm", "--platform=browser",
                 "--log-level=error", f"--outfile={target}"],
                "esbuild",
            )  # fmt: skip


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, cwd=cwd
        )
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"{what} did not finish within {INSTALL_TIMEOUT:.0f} s") from exc
    except OSError as exc:
        raise InstallError(f"{what} could not run: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-1500:]
        raise InstallError(f"{what} failed (exit {result.returncode}):\n{tail}")
