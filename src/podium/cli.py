"""`podium serve|migrate|create-admin|service-token|...`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import msgspec

from podium import seed
from podium.bench import command as bench
from podium.cli_common import CliError, migrate_now, resolved
from podium.embedded import EmbeddedError
from podium.settings import (
    Settings,
    SettingsError,
    ensure_secret_key,
    load_settings,
    parse_workers,
)

log = logging.getLogger("podium")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.host:
        settings = msgspec.structs.replace(settings, host=args.host)
    if args.port is not None:
        settings = msgspec.structs.replace(settings, port=args.port)
    settings = ensure_secret_key(settings)
    if args.proxy_headers and not settings.trusted_proxies:
        log.warning(
            "--proxy-headers without PODIUM_TRUSTED_PROXIES: no proxy is trusted, "
            "X-Forwarded-For is ignored"
        )
    workers = parse_workers(args.workers) if args.workers is not None else settings.workers
    with resolved(settings, "serve") as ready:
        if workers > 1:
            from podium.workers import serve_workers

            # Once here, not in each worker: N workers would race N migrations.
            migrate_now(ready)
            return serve_workers(ready, workers, proxy_headers=args.proxy_headers)
        # Imported once the data dir is ours: a second `serve` is refused at once.
        import uvicorn

        from podium.app import create_app
        from podium.serving import uvicorn_config

        config = uvicorn_config(create_app(ready), ready, proxy_headers=args.proxy_headers)
        server = uvicorn.Server(config)
        log.info("serving", extra={"url": f"http://{ready.host}:{ready.port}"})
        server.run()
        return 0 if server.started else 1


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with resolved(msgspec.structs.replace(settings, redis_url="unused"), "migrate") as ready:
        applied = migrate_now(ready)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_create_admin(args: argparse.Namespace, settings: Settings) -> int:
    from podium.api.auth import RegisterIn, validate_registration
    from podium.auth.passwords import hash_password
    from podium.store import users
    from podium.store.db import create_pool, migrate

    password = args.password if args.password is not None else read_password()
    errors = validate_registration(RegisterIn(args.username, args.email, password))
    if errors:
        raise CliError("; ".join(f"{k}: {v}" for k, v in errors.items()))

    async def run(s: Settings) -> users.User:
        assert s.database_url
        pool = await create_pool(s.database_url, schema=s.db_schema, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                await migrate(conn, s.db_schema)
            hashed = await hash_password(password, s.bcrypt_rounds)
            return await users.create_user(pool, args.username, args.email, hashed, "admin")
        except users.UserExists as exc:
            raise CliError(f"{exc.field} is already taken") from None
        finally:
            await pool.close()

    with resolved(msgspec.structs.replace(settings, redis_url="unused"), "cli") as ready:
        user = asyncio.run(run(ready))
    print(f"created admin {user.username} (id {user.id})")
    return 0


def read_password() -> str:
    """The new password from a prompt (asked twice), or one line of stdin if piped."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise CliError("no password on stdin (pipe it in, or run in a terminal)")
        return line.rstrip("\r\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise CliError("the passwords do not match")
    return first


def cmd_service_token(args: argparse.Namespace, settings: Settings) -> int:
    from podium.auth.revocation import revoke_service
    from podium.auth.tokens import hash_service_secret, new_service_secret
    from podium.store.db import create_pool, migrate

    if not args.revoke and not args.games:
        raise CliError("--games is required when issuing a credential (e.g. --games chess,go)")

    async def run(s: Settings) -> str:
        assert s.database_url
        pool = await create_pool(s.database_url, schema=s.db_schema, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                await migrate(conn, s.db_schema)
            if args.revoke:
                if not await revoke_service(pool, args.name):
                    raise CliError(f"no active service credential named {args.name!r}")
                return f"revoked service credential {args.name}" + await _close_sockets(s)
            games = [g.strip() for g in args.games.split(",") if g.strip()]
            secret = new_service_secret(args.name)
            try:
                await pool.execute(
                    "INSERT INTO service_credentials (name, secret_hash, games)"
                    " VALUES ($1, $2, $3)",
                    args.name,
                    hash_service_secret(secret),
                    games,
                )
            except Exception as exc:
                if type(exc).__name__ == "UniqueViolationError":
                    raise CliError(f"a service credential named {args.name!r} exists") from None
                raise
            return secret
        finally:
            await pool.close()

    async def _close_sockets(s: Settings) -> str:
        # HTTP refuses the credential from now on (checked in PostgreSQL per request);
        # its open sockets close when the instances hear it on the revocations channel.
        if s.redis_url is None:
            return " (no running instance to notify)"
        import redis.asyncio as aioredis

        from podium.auth.revocation import announce
        from podium.keys import Keys

        client = aioredis.Redis.from_url(s.redis_url, socket_connect_timeout=5)
        try:
            await announce(client, Keys(s.redis_prefix), f"service:{args.name}")
        except Exception as exc:
            raise CliError(
                f"revoked service credential {args.name}, but its open sockets could not be "
                f"closed (Redis: {exc}); restart the instances to close them"
            ) from None
        finally:
            await client.aclose()
        return "; its open sockets are closing"

    with resolved(settings, "cli", start_redis=False) as ready:
        print(asyncio.run(run(ready)))
    return 0


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from podium.app import close_services, open_services
    from podium.boards.index import BoardIndex

    async def run(s: Settings) -> int:
        services = await open_services(s)
        try:
            index = BoardIndex(services.pool, services.redis, s.redis_prefix, s.retention_days)
            if not await index.rebuild():
                raise CliError("another rebuild is running; try again when it finishes")
            return index.last_count
        finally:
            await close_services(services)

    with resolved(settings, "cli") as ready:
        count = asyncio.run(run(ready))
    print(f"rebuilt {count} board(s) from the log")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podium", description="Podium: a realtime leaderboard server."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server (embedded stores when no URLs are set)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="take the client address from X-Forwarded-For, but only from the proxies "
        "listed in PODIUM_TRUSTED_PROXIES",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        help="server processes on the port (SO_REUSEPORT), or 'auto' for one per CPU this "
        "process may use (default 1, or PODIUM_WORKERS)",
    )
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="apply pending database migrations")
    mig.set_defaults(func=cmd_migrate)

    admin = sub.add_parser("create-admin", help="create an admin account")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    admin.add_argument(
        "--password",
        help="the password; visible to other users of this machine (process list, shell "
        "history): omit it to be prompted, or pipe it on stdin",
    )
    admin.set_defaults(func=cmd_create_admin)

    svc = sub.add_parser(
        "service-token", help="issue (or --revoke) a credential for a trusted game server"
    )
    svc.add_argument("--name", required=True, help="a name for the credential")
    svc.add_argument("--games", help="comma-separated game ids it may write")
    svc.add_argument("--revoke", action="store_true", help="revoke the credential named --name")
    svc.set_defaults(func=cmd_service_token)

    rebuild = sub.add_parser("rebuild", help="recreate every Redis board from the PostgreSQL log")
    rebuild.set_defaults(func=cmd_rebuild)

    seed.register(sub)
    bench.register(sub)
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so the embedded servers are stopped in order and the
    # data dir lock released, instead of the process vanishing on the default action.
    raise SystemExit(128 + signum)


def _is_store_error(exc: BaseException) -> bool:
    # Refused connections, bad credentials, unknown databases: the user's to fix, so a
    # sentence rather than a traceback.
    module = type(exc).__module__
    return isinstance(exc, OSError) or module.startswith(("asyncpg", "redis"))


def main(argv: list[str] | None = None) -> int:
    from podium.logs import setup_logging

    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level)
        return int(args.func(args, settings) or 0)
    except (SettingsError, EmbeddedError, CliError) as exc:
        print(f"podium: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _is_store_error(exc):
            raise
        detail = str(exc) or type(exc).__name__
        print(f"podium: error: cannot use the configured stores: {detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
