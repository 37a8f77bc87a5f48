"""The `voicegate` command: serve, token, doctor, verify (contract §6), sentry-test."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from voicegate.config import load_settings
from voicegate.errors import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"voicegate: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicegate", description="Realtime voice gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="processes sharing the port (default 1; needs Redis when > 1)",
    )
    serve.add_argument("--ssl-certfile", metavar="FILE", help="serve TLS (wss://, https://)")
    serve.add_argument("--ssl-keyfile", metavar="FILE", help="the certificate's private key")
    serve.set_defaults(run=_serve)

    token = commands.add_parser("token", help="print a client JWT signed with JWT_SECRET")
    token.add_argument("--user", required=True, help="user id (the `sub` claim)")
    token.add_argument("--plan", required=True, help="plan, e.g. elite or intelia")
    token.add_argument("--email", default=None)
    token.add_argument("--ttl", type=int, default=3600, help="seconds of validity (default 3600)")
    token.set_defaults(run=_token)

    doctor = commands.add_parser("doctor", help="diagnose the Redis connection step by step")
    doctor.add_argument("--redis-url", default=None, help="default: REDIS_URL")
    doctor.set_defaults(run=_doctor)

    sentry_test = commands.add_parser(
        "sentry-test", help="send a test event through SENTRY_DSN, as the server would"
    )
    sentry_test.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        help="seconds to wait for Sentry's answer (default 10)",
    )
    sentry_test.set_defaults(run=_sentry_test)

    verify = commands.add_parser("verify", help="run the deployment checks against a gateway")
    verify.add_argument(
        "base_url", metavar="BASE_URL", type=_base_url, help="e.g. https://voice.example.com"
    )
    credentials = verify.add_mutually_exclusive_group(required=True)
    credentials.add_argument(
        "--token",
        help="a client token for a user on an allowed plan "
        "(the voice check uses one of that user's sessions)",
    )
    credentials.add_argument(
        "--jwt-secret",
        help="mint tokens for throwaway users with this HS256 secret (the server's JWT_SECRET)",
    )
    verify.add_argument("--plan", default="elite", help="plan of minted tokens (default elite)")
    verify.add_argument("--jwt-audience", default=None, help="`aud` of minted tokens")
    verify.add_argument("--jwt-issuer", default=None, help="`iss` of minted tokens")
    verify.add_argument(
        "--rate-limit",
        action="store_true",
        help="also check that the session over the limit is refused "
        "(needs --jwt-secret: it spends a throwaway user's quota)",
    )
    verify.add_argument(
        "--timeout", type=_seconds, default=10.0, help="seconds each check may take (default 10)"
    )
    verify.add_argument(
        "--long",
        nargs="?",
        type=_minutes,
        const=11.0,
        default=None,
        metavar="MINUTES",
        help="also hold one voice session this long (11 "
        "without a figure: the guide asks for more than 10 minutes)",
    )
    verify.add_argument(
        "--turn-every",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="a turn every SECONDS of the --long session (default 30)",
    )
    verify.add_argument(
        "--monitoring",
        action="store_true",
        help="also judge Redis ops/s, memory, latency and errors on the "
        "gateway's own figures (the guide's 24-hour checks)",
    )
    verify.add_argument(
        "--monitoring-seconds",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long --monitoring reads the figures (default 30)",
    )
    verify.set_defaults(run=_verify)
    return parser


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise ConfigError("--ssl-certfile and --ssl-keyfile go together")
    for option, path in (
        ("--ssl-certfile", args.ssl_certfile),
        ("--ssl-keyfile", args.ssl_keyfile),
    ):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{option}: no such file: {path}")
    if args.workers > 1 and not settings.redis_enabled:
        raise ConfigError(
            "--workers: several workers need Redis (REDIS_ENABLED=true); in memory each worker "
            "would keep its own rate limits and sessions"
        )
    from voicegate.server.run import serve

    serve(
        settings,
        args.host,
        args.port,
        workers=args.workers,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    return 0


def _token(args: argparse.Namespace) -> int:
    from voicegate.auth import mint_token

    settings = load_settings()
    if settings.jwt_secret is None:
        raise ConfigError("JWT_SECRET: not set; `voicegate token` signs with it")
    print(
        mint_token(
            settings.jwt_secret.get_secret_value(),
            args.user,
            args.plan,
            args.email,
            args.ttl,
            settings.jwt_audience,
            settings.jwt_issuer,
        )
    )
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from voicegate.cli import doctor

    url = args.redis_url or load_settings().redis_url.get_secret_value()
    return doctor.run(url, out=sys.stdout)


def _sentry_test(args: argparse.Namespace) -> int:
    from voicegate.cli import sentry_test

    return sentry_test.run(load_settings(), args.timeout, out=sys.stdout)


def _verify(args: argparse.Namespace) -> int:
    from voicegate.cli import verify

    return asyncio.run(verify.run(args, out=sys.stdout))


def _base_url(text: str) -> str:
    from voicegate.cli.verify import base_url  # imported only when `verify` is the command

    return base_url(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (1-256)")
    return int(text)


def _minutes(text: str) -> float:
    try:
        minutes = float(text)
    except ValueError:
        minutes = 0.0
    if not 0 < minutes <= 24 * 60:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes (up to a day)")
    return minutes


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds
