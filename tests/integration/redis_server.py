"""redis_server.py: a real redis-server on a loopback port for the shared-cache tests (stdlib only).

RedisServer() starts Debian's redis-server (7.0) on a free 127.0.0.1 port, and on a unix socket too with
unix_socket=True, from a config file in a temp dir (removed by stop() unless KEYWAY_IT_KEEP=1) that
holds its data dir, its output (redis.log) and, with a password, `requirepass` (so the password is in
no argv) and a copy in `password` (mode 0600) for a keywayd `password_file`. No persistence unless
persistence=True (AOF, fsync on every write): a server killed and started again is empty. Optional
`maxmemory` and its policy. DEBUG is enabled: a test can make it slow with DEBUG SLEEP.

Fault injection: kill() (SIGKILL), start() (again, on the same port and socket), restart(), pause()
(SIGSTOP: connections are still accepted by the kernel, nothing answers) and resume() (SIGCONT),
set_maxmemory(bytes, policy) (a full Redis: writes refused with OOM under noeviction), flushall().

Data, over RESP on a socket (RedisClient, no client library): command(*args) (the decoded reply; an
error reply raises RedisReplyError), keys() (SCAN), dump() ({key: value} for strings, the type name
for other keys), scan_for(needles) (which byte strings appear in any key or value of any type, raw or
hex or base64, etcd_cluster.encoded_forms), info(section), subscribe(channel) (a Subscription
collecting the messages in a thread), start_monitor() / monitor(seconds) (the commands other clients
sent, from MONITOR; the harness's own are left out).

The binary: $KEYWAY_REDIS_SERVER, else `redis-server` on PATH. Missing, RedisServer() raises RedisError
(a test failure, not a skip: scripts/test installs redis-server). The server runs in its own session,
is stopped at exit (atexit) and, when started from the main thread, killed by the kernel if this
process dies first (setpriv --pdeathsig), so no redis-server outlives a killed test run.
"""

import atexit
import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from etcd_cluster import encoded_forms, end_process, remove_temp_dir

__all__ = ["RedisServer", "RedisClient", "RedisError", "RedisReplyError", "RedisTimeout", "Subscription",
           "Monitor", "MonitoredCommand", "Message", "redis_binary"]


class RedisError(AssertionError):
    """The server could not be started or did not answer; the message says why."""


class RedisTimeout(RedisError):
    """No answer within the client's timeout (a paused or overloaded server)."""


class RedisReplyError(RedisError):
    """An error reply (`-ERR ...`, `-OOM ...`, `-NOAUTH ...`); `code` is its first word."""

    def __init__(self, message):
        super().__init__(message)
        self.code = message.split(" ", 1)[0]


def redis_binary():
    """Path of redis-server, or raises RedisError saying how to get one."""
    named = os.environ.get("KEYWAY_REDIS_SERVER")
    exe = named or shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
    if not exe or not os.access(exe, os.X_OK):
        why = ("KEYWAY_REDIS_SERVER=%s is not an executable" % named if named
               else "KEYWAY_REDIS_SERVER unset and no `redis-server` on PATH")
        raise RedisError("redis-server not found (%s): the shared-cache tests need a real Redis; install "
                         "Debian's redis-server (scripts/test does: apt-get install redis-server)" % why)
    return exe


def _free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _encode_arg(arg):
    if isinstance(arg, (bytes, bytearray, memoryview)):
        return bytes(arg)
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return repr(arg).encode("ascii")
    raise TypeError("a Redis argument must be bytes, str, int or float, not %r" % type(arg).__name__)


def encode_command(*args):
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _encode_arg(a)
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RedisClient:
    """One RESP2 connection: to 127.0.0.1:port, or to a unix socket path. Replies are decoded: simple
    strings as str, bulk strings as bytes (None when null), integers as int, arrays as lists (an error
    inside an array stays a RedisReplyError object); a top-level error reply is raised. A closed or
    broken connection raises RedisError, no answer within `timeout` RedisTimeout."""

    def __init__(self, port=None, unix_path=None, password=None, timeout=5.0, host="127.0.0.1",
                 source_host=None):
        """source_host: the local address to connect from (the harness uses its own, see
        RedisServer.client())."""
        self.timeout = timeout
        self.where = unix_path or "%s:%d" % (host, port)
        self._buf = bytearray()
        try:
            if unix_path:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(unix_path)
            else:
                self.sock = socket.create_connection((host, port), timeout=timeout,
                                                     source_address=(source_host, 0) if source_host else None)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except socket.timeout as e:
            raise RedisTimeout("redis %s: no connection within %.1fs" % (self.where, timeout)) from e
        except OSError as e:
            raise RedisError("redis %s: cannot connect: %s" % (self.where, e)) from e
        if password is not None:
            try:
                self.command("AUTH", password)
            except BaseException:
                self.close()
                raise

    @property
    def local_address(self):
        """"ip:port" of this end, as Redis names the client (None on a unix socket)."""
        name = self.sock.getsockname()
        return "%s:%d" % name if isinstance(name, tuple) else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, *args):
        try:
            self.sock.sendall(encode_command(*args))
        except socket.timeout as e:
            raise RedisTimeout("redis %s: send timed out after %.1fs" % (self.where, self.timeout)) from e
        except OSError as e:
            raise RedisError("redis %s: send failed: %s" % (self.where, e)) from e

    def _fill(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout as e:
            raise RedisTimeout("redis %s: no answer within %.1fs" % (self.where, self.timeout)) from e
        except OSError as e:
            raise RedisError("redis %s: receive failed: %s" % (self.where, e)) from e
        if not data:
            raise RedisError("redis %s: connection closed by the server" % self.where)
        self._buf += data

    def read_line(self):
        """One line of the stream without its CRLF (bytes)."""
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 2]
                return line
            self._fill()

    def _read_exact(self, n):
        while len(self._buf) < n + 2:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n + 2]
        return data

    def _read_value(self):
        line = self.read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._read_exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read_value() for _ in range(n)]
        raise RedisError("redis %s: not a RESP2 reply: %r" % (self.where, line[:80]))

    def read_reply(self):
        value = self._read_value()
        if isinstance(value, RedisReplyError):
            raise value
        return value

    def command(self, *args):
        self.send(*args)
        return self.read_reply()

    def pipeline(self, commands):
        """Sends every command (a list of argument tuples) at once, then reads their replies in order;
        error replies come back as RedisReplyError objects in the list, not raised."""
        if not commands:
            return []
        try:
            self.sock.sendall(b"".join(encode_command(*c) for c in commands))
        except OSError as e:
            raise RedisError("redis %s: send failed: %s" % (self.where, e)) from e
        return [self._read_value() for _ in commands]


Message = collections.namedtuple("Message", "channel data pattern")
Message.__doc__ = "A pub/sub message: channel and data as bytes; pattern (bytes) for a PSUBSCRIBE match, else None."


class _Reader:
    """A connection read by a thread of its own until close()."""

    def __init__(self, client):
        self._client = client
        self._closing = False
        self.error = None

    def _start(self, name):
        self._client.sock.settimeout(None)  # waits as long as it takes; close() ends it
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self):
        return self._thread.is_alive()

    def close(self):
        """Ends the reading at once (what is still in flight is lost)."""
        self._closing = True
        try:
            self._client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(5)
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Subscription(_Reader):
    """Messages published on some channels (or patterns), collected by a thread on their own
    connection. Made by RedisServer.subscribe(): the subscription is confirmed before it returns, so
    a message published afterwards is collected. A connection lost (the server killed) ends the
    thread; `error` then says why."""

    def __init__(self, client, channels, patterns):
        super().__init__(client)
        self._cond = threading.Condition()
        self._messages = []
        try:
            if channels:
                client.send("SUBSCRIBE", *channels)
            if patterns:
                client.send("PSUBSCRIBE", *patterns)
            confirmed = 0
            while confirmed < len(channels) + len(patterns):
                reply = client.read_reply()
                if isinstance(reply, list) and reply and reply[0] in (b"subscribe", b"psubscribe"):
                    confirmed += 1
                elif not self._collect(reply):   # a message on a channel confirmed first
                    raise RedisError("redis %s: unexpected answer to SUBSCRIBE: %r" % (client.where, reply))
        except BaseException:
            client.close()
            raise
        self._start("redis-subscription")

    def _run(self):
        try:
            while True:
                self._collect(self._client.read_reply())
        except (RedisError, OSError) as e:
            if not self._closing:
                self.error = str(e)
        finally:
            with self._cond:
                self._cond.notify_all()

    def _collect(self, reply):
        """Keeps a message reply; False for anything else."""
        if not isinstance(reply, list) or not reply:
            return False
        if reply[0] == b"message" and len(reply) == 3:
            msg = Message(reply[1], reply[2], None)
        elif reply[0] == b"pmessage" and len(reply) == 4:
            msg = Message(reply[2], reply[3], reply[1])
        else:
            return False
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()
        return True

    @property
    def messages(self):
        """The messages collected so far, in the order Redis sent them."""
        with self._cond:
            return list(self._messages)

    def wait(self, count=1, timeout=5.0, predicate=None):
        """Waits until `count` messages (those for which predicate(msg) is true, when given) were
        collected, or the timeout passed or the connection ended; returns those messages."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for m in self._messages if predicate is None or predicate(m)]
                left = deadline - time.monotonic()
                if len(got) >= count or left <= 0 or not self._thread.is_alive():
                    return got
                self._cond.wait(left)

    def clear(self):
        with self._cond:
            self._messages.clear()

    def scan_for(self, needles):
        """Which of `needles` appear in a channel or data of the messages collected (any encoded
        form); {needle: [where, ...]}."""
        return _scan(needles, [("channel %r" % m.channel[:80], m.channel) for m in self.messages] +
                     [("message on %r" % m.channel[:80], m.data) for m in self.messages])


class MonitoredCommand(collections.namedtuple("MonitoredCommand", "time db client args")):
    """One command MONITOR reported: its Unix time, database, client ("ip:port", "unix:path", "lua")
    and arguments (bytes, unescaped)."""

    @property
    def name(self):
        """The command's name, upper case ("SET")."""
        return self.args[0].decode("ascii", "replace").upper() if self.args else ""


_MONITOR_LINE = re.compile(rb"^\+?(\d+\.\d+) \[(\d+) ([^\]]*)\] ?(.*)$", re.S)
_SIMPLE_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("a"): b"\a", ord("b"): b"\b",
                   ord("\\"): b"\\", ord('"'): b'"'}


def parse_monitor_args(text):
    """The arguments of a MONITOR line: double-quoted, space separated, escaped as Redis's
    sdscatrepr does (\\n \\r \\t \\a \\b \\\\ \\" and \\xHH)."""
    args, i, n = [], 0, len(text)
    while i < n:
        if text[i] == 0x20:
            i += 1
            continue
        if text[i] != 0x22:
            raise ValueError("MONITOR argument without quotes at %d: %r" % (i, text[:120]))
        i += 1
        out = bytearray()
        while True:
            if i >= n:
                raise ValueError("unterminated MONITOR argument: %r" % text[:120])
            c = text[i]
            if c == 0x22:
                i += 1
                break
            if c == 0x5C and i + 1 < n:
                e = text[i + 1]
                if e == ord("x") and i + 3 < n:
                    out.append(int(text[i + 2:i + 4], 16))
                    i += 4
                    continue
                out += _SIMPLE_ESCAPES.get(e, bytes([e]))
                i += 2
                continue
            out.append(c)
            i += 1
        args.append(bytes(out))
    return args


class Monitor(_Reader):
    """The commands Redis executes, from MONITOR on a connection of its own, collected by a thread
    (RedisServer.start_monitor()). stop() returns them: it first sends a marker through the harness
    and reads up to it, so every command executed before stop() was called is in the list."""

    def __init__(self, server, include_own):
        super().__init__(server.client(timeout=5.0))
        self._server = server
        self._include_own = include_own
        self._lock = threading.Lock()
        self._seen = threading.Event()
        self._marker = None
        self._commands = []
        try:
            self._client.command("MONITOR")  # +OK: from here on every command is reported
        except BaseException:
            self._client.close()
            raise
        self._start("redis-monitor")

    def _run(self):
        try:
            while True:
                line = self._client.read_line()
                m = _MONITOR_LINE.match(line)
                if not m:
                    continue
                client = m.group(3).decode("utf-8", "replace")
                args = parse_monitor_args(m.group(4))
                if self._marker is not None and args == [b"ECHO", self._marker]:
                    self._seen.set()
                    return
                if not self._include_own and self._server._is_own(client):
                    continue
                with self._lock:
                    self._commands.append(MonitoredCommand(float(m.group(1)), int(m.group(2)), client, args))
        except (RedisError, OSError, ValueError) as e:
            if not self._closing:
                self.error = str(e)

    @property
    def commands(self):
        """The commands collected so far."""
        with self._lock:
            return list(self._commands)

    def stop(self):
        """Stops monitoring; returns every command collected."""
        if self._thread.is_alive():
            self._marker = b"keyway-it-monitor-end-" + uuid.uuid4().hex.encode()
            try:
                self._server.command("ECHO", self._marker, timeout=2.0)
                self._seen.wait(5.0)
            except RedisError:
                pass  # a killed or paused server: what arrived so far is all there is
        self.close()
        return self.commands

    def __exit__(self, *exc):
        self.stop()


def _scan(needles, blobs):
    """{needle: [where, ...]} for the needles whose raw or encoded form appears in one of the
    (where, bytes) blobs."""
    found = {}
    for needle in needles:
        forms = encoded_forms(needle)
        for where, blob in blobs:
            for form in forms:
                if form in blob:
                    found.setdefault(needle, []).append(
                        "%s (%s)" % (where, "raw" if form == needle else "encoded %r" % form[:16]))
    return found


class RedisServer:
    """A real redis-server on 127.0.0.1 (and a unix socket with unix_socket=True). start() (done by
    the constructor unless start=False) waits until it answers PING; stop() ends it and removes its
    temp dir."""

    def __init__(self, password=None, unix_socket=False, maxmemory=None, maxmemory_policy="noeviction",
                 persistence=False, extra_config=None, start=True, start_timeout=30.0):
        """password: `requirepass` (str). maxmemory: bytes (None: no limit). persistence: an
        append-only file fsynced on every write, so a SIGKILL keeps what was acknowledged (default
        off: started again, the server is empty). extra_config: {directive: value} added to the
        config file as they are."""
        self.exe = redis_binary()
        self.password = password
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.persistence = persistence
        self.extra_config = dict(extra_config or {})
        self.dir = Path(tempfile.mkdtemp(prefix="keyway-redis-"))
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir()
        self.conf_path = self.dir / "redis.conf"
        self.log_path = self.dir / "redis.log"
        self.socket_path = str(self.dir / "redis.sock") if unix_socket else None
        if self.socket_path and len(self.socket_path.encode()) > 100:
            raise RedisError("unix socket path too long (%d bytes, sun_path holds 107): %s; set TMPDIR to a "
                             "shorter dir" % (len(self.socket_path.encode()), self.socket_path))
        self.password_file = None
        if password is not None:
            self.password_file = str(self.dir / "password")
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password)
        self.port = None
        self.proc = None
        self.paused = False
        self._stopped = False
        self._log = None
        self._lock = threading.Lock()   # guards the harness's cached connection
        self._conn = None
        # The harness connects from a loopback address of its own, so that a monitor tells its
        # commands from keywayd's (which come from 127.0.0.1) by address alone; where that address
        # cannot be bound, by the ports of the harness's connections.
        self.own_host = _own_source_host()
        self._own_clients = set()
        self._subscriptions = []
        self._monitors = []
        # The server runs in its own session (a ^C of the tests does not reach it): whatever ends
        # this process without stop() still ends it.
        atexit.register(self.stop)
        if start:
            try:
                self._start_fresh(start_timeout)
            except BaseException:
                self.stop()
                raise

    # -- set-up --
    @property
    def address(self):
        """"127.0.0.1:PORT", as keyway's `cache.shared.redis.address` takes it."""
        return "127.0.0.1:%d" % self.port

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def _config(self):
        conf = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            # Bound to loopback only; protected mode would refuse the harness's 127.0.0.2 without a
            # password, and DEBUG (a test can make the server slow with DEBUG SLEEP) from it too.
            "protected-mode": "no",
            "daemonize": "no",
            "supervised": "no",
            "logfile": '""',            # stdout, which goes to redis.log with stderr
            "loglevel": "notice",
            "always-show-logo": "no",
            "dir": _conf_quote(str(self.data_dir)),
            "save": '""',
            "appendonly": "yes" if self.persistence else "no",
            "appendfsync": "always",
            "databases": "16",
            "enable-debug-command": "yes",
        }
        if self.socket_path:
            conf["unixsocket"] = _conf_quote(self.socket_path)
            conf["unixsocketperm"] = "700"
        if self.password is not None:
            conf["requirepass"] = _conf_quote(self.password)
        if self.maxmemory is not None:
            conf["maxmemory"] = str(int(self.maxmemory))
            conf["maxmemory-policy"] = self.maxmemory_policy
        conf.update({k: str(v) for k, v in self.extra_config.items()})
        return "".join("%s %s\n" % kv for kv in conf.items())

    def _write_config(self):
        fd = os.open(str(self.conf_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._config())

    def _spawn(self):
        self._drop_conn()
        self._write_config()
        self._log = open(self.log_path, "ab")
        self._log.write(b"--- keyway-it start %s port %d\n" % (time.strftime("%H:%M:%S").encode(), self.port))
        self._log.flush()
        argv = [self.exe, str(self.conf_path)]
        # The kernel kills the server when the thread that started it ends (the test run killed by a
        # timeout gets no atexit): only the main thread lives as long as the process.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            argv = [setpriv, "--pdeathsig", "KILL", "--"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     cwd=str(self.dir), start_new_session=True)
        self.paused = False

    def _start_fresh(self, timeout):
        """Starts on a free port; one taken meanwhile by someone else (free when chosen, then
        released for redis to bind) gets another port and another try."""
        for attempt in range(3):
            self.port = _free_port()
            self._spawn()
            try:
                return self.wait_ready(timeout)
            except RedisError as e:
                if attempt == 2 or "Address already in use" not in str(e):
                    raise
                self._end_process()
        return self

    def tail(self, n=30):
        """The last n lines of the server's output since its last start."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return "(no log: %s)" % e
        text = text[text.rfind("--- keyway-it start"):]
        return "\n".join(text.splitlines()[-n:])

    def _state(self):
        if self.proc is None:
            return "never started"
        if self.proc.poll() is not None:
            return "exited %s" % self.proc.returncode
        return "paused" if self.paused else "running"

    def wait_ready(self, timeout=30.0):
        """Waits until the server answers PING; its exit is an error at once, quoting its output."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if not self.running:
                raise RedisError("redis-server on %s %s while starting; its output (%s):\n%s" % (
                    self.address, self._state(), self.log_path, self.tail()))
            try:
                # A short probe: a port someone else listens on accepts and never answers, and the
                # server's exit (quoted below) is noticed at the next round.
                with self.client(timeout=max(0.2, min(0.5, deadline - time.monotonic()))) as c:
                    if c.command("PING") == "PONG":
                        return self
            except RedisReplyError as e:
                last = e   # LOADING while it reads a persisted file: not ready yet
            except RedisError as e:
                last = e
            if time.monotonic() > deadline:
                raise RedisError("redis-server on %s not ready within %.0fs (%s; last: %s); its output:\n%s" % (
                    self.address, timeout, self._state(), last, self.tail()))
            time.sleep(0.05)

    # -- lifecycle --
    def kill(self):
        """SIGKILL the server (a crash: without persistence, everything is gone)."""
        self._drop_conn()
        if self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.paused = False
        self._close_log()

    def start(self, wait=True, timeout=30.0):
        """Starts the server again on the same port and socket (what keyway was configured with);
        empty unless persistence was asked for."""
        if self.port is None:   # RedisServer(start=False): the first start picks the port
            return self._start_fresh(timeout)
        if self.running:
            raise RedisError("redis-server on %s is already running" % self.address)
        if not self.persistence:
            for leftover in self.data_dir.iterdir():
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()
        self._spawn()
        if wait:
            self.wait_ready(timeout)
        return self

    def restart(self, wait=True, timeout=30.0):
        self.kill()
        return self.start(wait=wait, timeout=timeout)

    def pause(self):
        """SIGSTOP: its sockets stay open and the kernel accepts connections, but nothing answers
        (a hung server, not a refused one)."""
        if not self.running:
            raise RedisError("redis-server on %s is not running" % self.address)
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.running:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False
        # The cached connection may hold a half-read answer from a command that timed out meanwhile.
        self._drop_conn()

    def _end_process(self):
        if self.running:
            end_process(self.proc)
        self.paused = False
        self._close_log()

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def stop(self):
        """Ends the server, its subscriptions and monitors, and removes the temp dir (kept with
        KEYWAY_IT_KEEP=1). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        self._drop_conn()
        for reader in self._subscriptions + self._monitors:
            reader.close()
        self._end_process()
        remove_temp_dir(self.dir, "redis data")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- connections --
    def client(self, timeout=5.0, unix=False, auth=True):
        """A new connection (TCP, or the unix socket with unix=True), authenticated with the server's
        password unless auth=False. The caller closes it."""
        if unix and not self.socket_path:
            raise RedisError("this RedisServer has no unix socket (RedisServer(unix_socket=True))")
        c = RedisClient(port=None if unix else self.port, unix_path=self.socket_path if unix else None,
                        password=self.password if auth else None, timeout=timeout,
                        source_host=None if unix else self.own_host)
        if self.own_host is None and c.local_address:
            self._own_clients.add(c.local_address)
        return c

    def _is_own(self, client):
        """Whether a client as MONITOR names it ("ip:port") is one of the harness's connections."""
        if self.own_host is not None:
            return client.startswith(self.own_host + ":")
        return client in self._own_clients

    def _drop_conn(self):
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _on_conn(self, timeout, use):
        """use(the harness's connection), made on first use and dropped after a failure other than
        an error reply (its stream may hold half an answer)."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self.client(timeout=timeout)
                self._conn.timeout = timeout
                self._conn.sock.settimeout(timeout)
                return use(self._conn)
            except RedisReplyError:
                raise
            except RedisError:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                raise

    def command(self, *args, timeout=5.0):
        """Runs one command on the harness's connection and returns the decoded reply; an error
        reply raises RedisReplyError (e.g. code "OOM")."""
        return self._on_conn(timeout, lambda c: c.command(*args))

    def _pipeline(self, commands, timeout=15.0):
        return self._on_conn(timeout, lambda c: c.pipeline(commands))

    def ping(self, timeout=2.0):
        """True when the server answers PING within timeout."""
        try:
            return self.command("PING", timeout=timeout) == "PONG"
        except RedisError:
            return False

    def flushall(self):
        return self.command("FLUSHALL", "SYNC")

    def set_maxmemory(self, nbytes, policy="noeviction"):
        """Sets maxmemory (bytes; 0: no limit) and its policy on the running server."""
        self.maxmemory, self.maxmemory_policy = nbytes, policy
        return self.command("CONFIG", "SET", "maxmemory", int(nbytes), "maxmemory-policy", policy)

    def info(self, section=None):
        """INFO [section] as {field: value}: ints where they are ints, else str."""
        raw = self.command(*(["INFO", section] if section else ["INFO"]))
        out = {}
        for line in raw.decode("utf-8", "replace").splitlines():
            if not line or line.startswith("#") or ":" not in line:
                continue
            k, v = line.split(":", 1)
            try:
                out[k] = int(v)
            except ValueError:
                out[k] = v
        return out

    # -- data --
    def keys(self, match=None):
        """Every key (bytes) of database 0, by SCAN (or those matching a glob)."""
        cursor, out = b"0", []
        while True:
            args = ["SCAN", cursor, "COUNT", 1000] + (["MATCH", match] if match is not None else [])
            cursor, batch = self.command(*args)
            out.extend(batch)
            if cursor == b"0":
                return sorted(set(out))

    def _typed_values(self):
        """[(key, type name, value)] for every key: bytes for a string, else what the type's read
        command returns (field/value list, members, ...). Keys gone meanwhile are left out."""
        keys = self.keys()
        types = self._pipeline([("TYPE", k) for k in keys])
        reads = {"string": ("GET",), "hash": ("HGETALL",), "list": ("LRANGE", 0, -1), "set": ("SMEMBERS",),
                 "zset": ("ZRANGE", 0, -1, "WITHSCORES"), "stream": ("XRANGE", "-", "+")}
        wanted = [(k, t) for k, t in zip(keys, types) if isinstance(t, str) and t in reads]
        values = self._pipeline([(reads[t][0], k) + reads[t][1:] for k, t in wanted])
        return [(k, t, v) for (k, t), v in zip(wanted, values) if v is not None and not isinstance(v, RedisError)]

    def dump(self):
        """{key: value bytes} for every string key; other keys map to their type name ("hash")."""
        return {k: (v if t == "string" else t) for k, t, v in self._typed_values()}

    def scan_for(self, needles):
        """Which of `needles` (bytes) appear in any key, or in the value of a key of any type, raw or
        in one of etcd_cluster.encoded_forms(). Returns {needle: [where, ...]} for the ones found."""
        blobs = []
        for key, typ, value in self._typed_values():
            blobs.append(("key %r" % key[:80], key))
            for i, part in enumerate(_flatten(value)):
                blobs.append(("%s value of %r%s" % (typ, key[:80], "" if typ == "string" else " [%d]" % i), part))
        return _scan(needles, blobs)

    # -- pub/sub and MONITOR --
    def subscribe(self, *channels, patterns=()):
        """A Subscription collecting what is published on `channels` (and `patterns`) from now on."""
        if not channels and not patterns:
            raise ValueError("subscribe() needs a channel or a pattern")
        sub = Subscription(self.client(), list(channels), list(patterns))
        self._subscriptions.append(sub)
        return sub

    def start_monitor(self, include_own=False):
        """A Monitor collecting every command Redis executes from now on, those of the harness's own
        connections left out unless include_own."""
        mon = Monitor(self, include_own)
        self._monitors.append(mon)
        return mon

    def monitor(self, seconds, include_own=False):
        """The commands Redis executed during the next `seconds` (from other clients, e.g. keywayd)."""
        mon = self.start_monitor(include_own)
        time.sleep(seconds)
        return mon.stop()


def _own_source_host():
    """127.0.0.2 when this host can connect from it (all of 127/8 is local on Linux), else None."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return None
    finally:
        s.close()


def _flatten(value):
    if isinstance(value, (bytes, bytearray)):
        yield bytes(value)
    elif isinstance(value, list):
        for v in value:
            yield from _flatten(v)


def _conf_quote(text):
    """A value for redis.conf: double-quoted, with the escapes its parser (sdssplitargs) reads."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return '"%s"' % "".join(out)
