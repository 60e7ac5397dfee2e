"""harness.py: runs a real keywayd (+ keywayctl) against fake upstreams for the integration tests.

What it gives a test:
- Keyway: a temp dir with a config and a state dir, keywayctl wrappers (init, teams, clients, secrets
  via stdin), start/stop of keywayd with its JSON stderr collected and the bound ports parsed from its
  "listening" lines.
- Raw-socket HTTP/1.1 client helpers (RawConnection, request, concurrent_requests): exact request
  bytes out, exact status line / header order / body in, keep-alive and close detection.
- KeywayTestCase: one fake upstream + one keywayd per test class, with the standard teams, clients
  and secrets provisioned. `TLS = True` on a subclass runs the same tests over TLS: the fake serves
  https with a certificate of the run's test CA (../fakes/tls_ca.py) and every https upstream gets
  `tls: {ca_file: <that CA>}` (with_tls()).

Binaries: $KEYWAYD / $KEYWAYCTL, else <build dir>/daemon/{keywayd,keywayctl} where the build dir is
$KEYWAY_BUILD_DIR or <repo>/build. Set KEYWAY_IT_KEEP=1 to keep temp dirs, KEYWAY_IT_VERBOSE=1 to
echo keywayd's stderr.
"""

import http.client
import json
import os
import re
import secrets as _secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fakes"))

from fake_upstream import FakeUpstream, Response, sse_event  # noqa: E402  (path set just above)
from tls_ca import test_pki  # noqa: E402

__all__ = ["REPO", "FakeUpstream", "Response", "sse_event", "Keyway", "KeywayError", "HttpResponse",
           "RawConnection", "ConnectionClosed", "request", "build_request", "concurrent_requests",
           "KeywayTestCase", "raise_fd_limit", "binary", "closed_port", "HOP_BY_HOP", "http_client",
           "test_pki", "with_tls"]

HOP_BY_HOP = ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "proxy-connection")


def raise_fd_limit():
    """Thousands of sockets in one process (client + fake side): lift the soft fd limit to the hard one.

    keywayd inherits the raised limit from this process, which the 2,000-request test needs too."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


raise_fd_limit()


def binary(name):
    env = {"keywayd": "KEYWAYD", "keywayctl": "KEYWAYCTL"}[name]
    if os.environ.get(env):
        return os.environ[env]
    build = Path(os.environ.get("KEYWAY_BUILD_DIR") or (REPO / "build"))
    if not build.is_absolute():
        build = REPO / build
    return str(build / "daemon" / name)


def closed_port():
    """A 127.0.0.1 port with (almost certainly) nothing listening on it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------------------------
# HTTP on raw sockets
# ------------------------------------------------------------------------------------------------

class ConnectionClosed(Exception):
    """The peer closed the connection before a complete response arrived."""


class HttpResponse:
    def __init__(self, version, status, reason, headers, body):
        self.version = version      # "HTTP/1.1"
        self.status = status        # int
        self.reason = reason        # reason phrase as sent (may be empty)
        self.headers = headers      # [(name, value)] in wire order
        self.body = body            # bytes (de-chunked), None while streaming

    def header(self, name, default=None):
        lname = name.lower()
        for n, v in self.headers:
            if n.lower() == lname:
                return v
        return default

    def header_all(self, name):
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def has_header(self, name):
        return bool(self.header_all(name))

    def connection_tokens(self):
        return {t.strip().lower() for v in self.header_all("Connection") for t in v.split(",") if t.strip()}

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace") if self.body is not None else None

    def __repr__(self):
        body = self.body[:300] if self.body is not None else None
        return "<HttpResponse %d %r %r body=%r>" % (self.status, self.reason, self.headers, body)


def _parse_head(raw):
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("bad status line %r" % lines[0])
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) == 3 else ""
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return HttpResponse(version, status, reason, headers, None)


def _body_mode(resp, method):
    if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
        return ("none", 0)
    te = ",".join(resp.header_all("Transfer-Encoding")).lower()
    if "chunked" in te:
        return ("chunked", 0)
    cl = resp.header("Content-Length")
    if cl is not None:
        return ("length", int(cl.strip()))
    return ("close", 0)


def _decode_chunked(buf, start):
    """Returns (body, end offset) if the chunked body starting at `start` is complete, else None."""
    pos = start
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailers up to the empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                line_empty = eol == pos
                pos = eol + 2
                if line_empty:
                    return bytes(body), pos
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos:pos + size]
        pos += size + 2


def try_parse_response(buf, method="GET", eof=False):
    """Parses one complete response from the front of buf: (HttpResponse, consumed) or None.

    Interim 1xx responses are returned like any other (callers skip them)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    resp = _parse_head(bytes(buf[:end]))
    pos = end + 4
    mode, n = _body_mode(resp, method)
    if mode == "none":
        resp.body = b""
        return resp, pos
    if mode == "length":
        if len(buf) < pos + n:
            return None
        resp.body = bytes(buf[pos:pos + n])
        return resp, pos + n
    if mode == "chunked":
        got = _decode_chunked(buf, pos)
        if got is None:
            return None
        resp.body, consumed = got
        return resp, consumed
    if not eof:
        return None
    resp.body = bytes(buf[pos:])
    return resp, len(buf)


def _norm_headers(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def build_request(method, target, headers=None, body=None, version="HTTP/1.1", host=None,
                  content_length=True):
    """Exact request bytes. Adds Host (unless given or host is False) and, for a body, Content-Length
    (unless a Content-Length/Transfer-Encoding header is given or content_length is False)."""
    hdrs = _norm_headers(headers)
    names = {n.lower() for n, _ in hdrs}
    if host is not False and "host" not in names:
        hdrs.insert(0, ("Host", host or "127.0.0.1"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    if (body is not None and content_length and "content-length" not in names
            and "transfer-encoding" not in names):
        hdrs.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, target, version)
    head += "".join("%s: %s\r\n" % (n, v) for n, v in hdrs) + "\r\n"
    return head.encode("latin-1") + (body or b"")


class RawConnection:
    """One client TCP connection to keywayd, driven byte by byte (over TLS with an ssl_context:
    for tests that talk to a TLS fake directly)."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, ssl_context=None):
        self.port = port
        self.host = host
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=host)
        self.buf = bytearray()
        self.eof = False
        self._stream = None  # (mode, remaining) while a streamed body is being read
        self.stream_body = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def send_request(self, method, target, headers=None, body=None, version="HTTP/1.1", **kw):
        kw.setdefault("host", "127.0.0.1:%d" % self.port)
        self.send(build_request(method, target, headers, body, version, **kw))

    def _fill(self, deadline):
        if self.eof:
            raise ConnectionClosed("connection closed by peer")
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out waiting for data from keywayd")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data

    def read_response(self, method="GET", timeout=None):
        """Reads one final (non-1xx) response. Raises ConnectionClosed or socket.timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            got = try_parse_response(self.buf, method, self.eof)
            if got is not None:
                resp, consumed = got
                del self.buf[:consumed]
                if 100 <= resp.status < 200:
                    continue
                return resp
            if self.eof:
                raise ConnectionClosed("connection closed after %d bytes: %r" % (len(self.buf),
                                                                                bytes(self.buf[:200])))
            self._fill(deadline)

    def request(self, method, target, headers=None, body=None, version="HTTP/1.1", timeout=None, **kw):
        self.send_request(method, target, headers, body, version, **kw)
        return self.read_response(method, timeout)

    # -- streamed responses (SSE) --
    def read_head(self, timeout=None):
        """Reads a response head only; the body is then read with read_stream_until()."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                resp = _parse_head(bytes(self.buf[:end]))
                del self.buf[:end + 4]
                if 100 <= resp.status < 200:
                    continue
                mode, n = _body_mode(resp, "GET")
                self._stream = [mode, n]
                self.stream_body = bytearray()
                return resp
            self._fill(deadline)

    def _pump_stream(self):
        mode = self._stream[0]
        if mode == "length":
            take = min(self._stream[1], len(self.buf))
            self.stream_body += self.buf[:take]
            del self.buf[:take]
            self._stream[1] -= take
        elif mode == "close":
            self.stream_body += self.buf
            del self.buf[:]
        elif mode == "chunked":
            while True:
                eol = self.buf.find(b"\r\n")
                if eol < 0:
                    return
                size = int(bytes(self.buf[:eol]).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    self._stream[0] = "done"
                    return
                if len(self.buf) < eol + 2 + size + 2:
                    return
                self.stream_body += self.buf[eol + 2:eol + 2 + size]
                del self.buf[:eol + 2 + size + 2]

    def read_stream_until(self, marker, timeout=None):
        """Reads body bytes until `marker` appears in the decoded body; returns the body so far."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            self._pump_stream()
            if marker in self.stream_body:
                return bytes(self.stream_body)
            self._fill(deadline)

    def peer_closed(self, wait=0.5):
        """True if the peer has closed (EOF or RST) within `wait` seconds; False if still open.

        Unexpected extra bytes count as 'open' but are kept in the buffer."""
        if self.eof:
            return True
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        ready = sel.select(wait)
        sel.close()
        if not ready:
            return False
        try:
            self.sock.settimeout(1)
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return True
        self.buf += data
        return False

    def send_body_watching(self, body, piece=16384):
        """Sends body in pieces, stopping early if the server already answered (e.g. 413) or closed."""
        sent = 0
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        try:
            while sent < len(body):
                if sel.select(0):
                    return sent
                try:
                    self.sock.sendall(body[sent:sent + piece])
                except (BrokenPipeError, ConnectionResetError):
                    return sent
                sent += piece
            return sent
        finally:
            sel.close()


def request(port, method, target, headers=None, body=None, version="HTTP/1.1", timeout=10.0, ssl_context=None,
            **kw):
    """One request on a fresh connection; the connection is closed afterwards."""
    with RawConnection(port, timeout=timeout, ssl_context=ssl_context) as c:
        return c.request(method, target, headers, body, version, timeout, **kw)


def http_client(port, timeout=10.0):
    """A stdlib http.client connection to keywayd: a second, independent HTTP parser for cross-checks."""
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def concurrent_requests(port, raw_requests, timeout=60.0, host="127.0.0.1"):
    """Sends every raw request on its own connection, all at once, from one thread (selectors).

    Returns a list aligned with raw_requests: HttpResponse, or an Exception describing the failure."""
    sel = selectors.DefaultSelector()
    results = [None] * len(raw_requests)
    states = {}
    for i, raw in enumerate(raw_requests):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, 115, 11):  # 0, EINPROGRESS, EAGAIN
            results[i] = OSError(err, os.strerror(err))
            s.close()
            continue
        states[s] = {"i": i, "out": memoryview(raw), "in": bytearray()}
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    pending = len(states)
    while pending and time.monotonic() < deadline:
        for key, events in sel.select(min(1.0, max(0.0, deadline - time.monotonic()))):
            s = key.fileobj
            st = states[s]
            done = None
            try:
                if events & selectors.EVENT_WRITE:
                    n = s.send(st["out"])
                    st["out"] = st["out"][n:]
                    if not len(st["out"]):
                        sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(65536)
                st["in"] += data
                got = try_parse_response(st["in"], "GET", eof=not data)
                while got is not None and 100 <= got[0].status < 200:
                    del st["in"][:got[1]]
                    got = try_parse_response(st["in"], "GET", eof=not data)
                if got is not None:
                    done = got[0]
                elif not data:
                    done = ConnectionClosed("closed after %d bytes" % len(st["in"]))
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                done = e
            if done is not None:
                results[st["i"]] = done
                sel.unregister(s)
                s.close()
                pending -= 1
    for s, st in states.items():
        if results[st["i"]] is None:
            results[st["i"]] = socket.timeout("no complete response within %.0fs" % timeout)
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
    sel.close()
    return results


# ------------------------------------------------------------------------------------------------
# keywayd / keywayctl
# ------------------------------------------------------------------------------------------------

class KeywayError(AssertionError):
    pass


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for nested dicts of scalars (enough for keyway configs)."""
    out = []
    pad = "  " * indent
    for k, v in obj.items():
        if isinstance(v, dict):
            if v:
                out.append("%s%s:" % (pad, k))
                out.append(to_yaml(v, indent + 1))
            else:
                out.append("%s%s: {}" % (pad, k))
        elif isinstance(v, (list, tuple)):
            out.append("%s%s: [%s]" % (pad, k, ", ".join(_yaml_scalar(x) for x in v)))
        else:
            out.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    return "\n".join(out)


_SCRUBBED_ENV = ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC",
                 "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "KEYWAY_CONFIG")


class Keyway:
    """A keywayd instance with its own temp dir, config, state dir and master key."""

    def __init__(self, upstreams, limits=None, extra=None, log_level="info"):
        self.dir = Path(tempfile.mkdtemp(prefix="keyway-it-"))
        self.state_dir = self.dir / "state"
        self.config_path = self.dir / "keyway.yaml"
        self.config = {
            "listen": "127.0.0.1:0",
            "state_dir": str(self.state_dir),
            "log": {"level": log_level, "access_log": True},
        }
        if limits:
            self.config["limits"] = dict(limits)
        self.config.update(extra or {})
        self.config["upstreams"] = upstreams
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        self.proc = None
        self.exit_code = None
        self.killed = False
        self.main_port = None
        self.compat_ports = {}
        self._lines = []
        self._records = []
        self._cond = threading.Condition()
        self._readers = []
        self._verbose = bool(os.environ.get("KEYWAY_IT_VERBOSE"))
        self.write_config()

    def write_config(self, text=None):
        self.config_path.write_text(text if text is not None else to_yaml(self.config) + "\n")

    def config_variant(self, **sections):
        """Writes a copy of this configuration with the given top-level sections replaced next to
        it (for a keywayctl or --check-config run); returns its path."""
        path = self.dir / ("variant-%s.yaml" % _secrets.token_hex(5))
        path.write_text(to_yaml(dict(self.config, **sections)) + "\n")
        return path

    # -- keywayctl --
    def ctl(self, *args, input=None, check=True, config=True, timeout=30):
        """Runs keywayctl; input (str) goes to stdin. check=True raises KeywayError on exit != 0."""
        argv = [binary("keywayctl")]
        if config:
            argv += ["--config", str(self.config_path)]
        argv += [str(a) for a in args]
        cp = subprocess.run(argv, input=input if input is not None else "", capture_output=True,
                            text=True, env=self.env, timeout=timeout, cwd=str(self.dir))
        if check and cp.returncode != 0:
            # stdin may hold a secret: never echo it, only argv, exit code and the tool's own output.
            raise KeywayError("keywayctl %s exited %d\nstdout: %s\nstderr: %s"
                              % (" ".join(argv[1:]), cp.returncode, cp.stdout[-2000:], cp.stderr[-2000:]))
        return cp

    def init(self):
        return self.ctl("init")

    def add_team(self, name, upstreams=None):
        args = ["team", "add", name]
        if upstreams:
            args += ["--upstreams", ",".join(upstreams)]
        return self.ctl(*args)

    def add_client(self, name, team):
        cp = self.ctl("client", "add", name, "--team", team)
        lines = [ln.strip() for ln in cp.stdout.splitlines() if ln.strip()]
        if not lines or not lines[-1].startswith("kw_"):
            raise KeywayError("keywayctl client add: last stdout line is not a kw_ token (%d lines)"
                              % len(lines))
        return lines[-1]

    def revoke_client(self, name):
        return self.ctl("client", "revoke", name)

    def set_secret(self, name, value, team=None, newline=True):
        args = ["secret", "set", name] + (["--team", team] if team else [])
        return self.ctl(*args, input=value + ("\n" if newline else ""))

    # -- keywayd --
    def _reader(self, stream, tag):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            rec = None
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    rec = None
            except ValueError:
                pass
            if self._verbose:
                print("[keywayd %s] %s" % (tag, line), file=sys.stderr, flush=True)
            with self._cond:
                self._lines.append((tag, line))
                if rec is not None:
                    self._records.append(rec)
                self._cond.notify_all()
        stream.close()

    def start(self, timeout=20.0, args=None, wait_ready=True):
        """Starts keywayd and waits for its "ready" line; fills main_port and compat_ports.

        wait_ready=False waits for the main "listening" line only (a keywayd that binds its listeners
        but is not ready yet, e.g. a fleet host that never synced while etcd is down); the compat
        ports logged by then are filled."""
        exe = binary("keywayd")
        if not os.access(exe, os.X_OK):
            raise KeywayError("keywayd not found at %s (build it, or set KEYWAYD / KEYWAY_BUILD_DIR)" % exe)
        with self._cond:
            self._lines, self._records = [], []
        self.exit_code, self.killed = None, False
        argv = [exe, "--config", str(self.config_path)] + list(args or [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env, cwd=str(self.dir))
        self._readers = [threading.Thread(target=self._reader, args=(self.proc.stderr, "stderr"), daemon=True),
                         threading.Thread(target=self._reader, args=(self.proc.stdout, "stdout"), daemon=True)]
        for t in self._readers:
            t.start()
        if wait_ready:
            awaited = "ready"
            rec = self.wait_for_record(lambda r: r.get("msg") == "ready", timeout, stop_on_exit=True)
        else:
            awaited = "listening"
            rec = self.wait_for_record(lambda r: r.get("msg") == "listening" and r.get("listener") == "main",
                                       timeout, stop_on_exit=True)
        if rec is None:
            code = self.proc.poll()
            self.stop(timeout=2)
            raise KeywayError("keywayd did not log \"%s\" within %.0fs (exit code %s); stderr tail:\n%s"
                              % (awaited, timeout, code, self.stderr_tail()))
        self.compat_ports = {}
        self.main_port = None
        for r in self.records():
            if r.get("msg") != "listening":
                continue
            port = int(str(r.get("address", "")).rsplit(":", 1)[-1])
            if r.get("listener") == "main":
                self.main_port = port
            elif r.get("listener") == "compat":
                self.compat_ports[r.get("upstream")] = port
        if not self.main_port:
            self.stop(timeout=2)
            raise KeywayError("keywayd logged ready but no main \"listening\" line; stderr tail:\n%s"
                              % self.stderr_tail())
        return self

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.exit_code

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code (negative if killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(10)
        self.exit_code = self.proc.returncode
        for t in self._readers:
            t.join(5)
        return self.exit_code

    def cleanup(self):
        self.stop()
        if not os.environ.get("KEYWAY_IT_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("keyway-it: kept %s" % self.dir, file=sys.stderr)

    # -- logs --
    def lines(self, tag="stderr"):
        with self._cond:
            return [ln for t, ln in self._lines if t == tag]

    def stderr_text(self):
        return "\n".join(self.lines("stderr"))

    def stderr_tail(self, n=40):
        return "\n".join(self.lines("stderr")[-n:])

    def records(self):
        with self._cond:
            return list(self._records)

    def wait_for_record(self, pred, timeout=5.0, stop_on_exit=False):
        """First JSON log record matching pred, waiting up to timeout; None if none."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self._records:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if stop_on_exit and self.proc is not None and self.proc.poll() is not None:
                    # give the reader a moment to drain what was written before exit
                    self._cond.wait(0.2)
                    for r in self._records:
                        if pred(r):
                            return r
                    return None
                self._cond.wait(min(left, 0.2))

    def access_records(self):
        return [r for r in self.records() if r.get("msg") == "access"]


def kill_after_writes(proc, writes, timeout):
    """SIGKILLs `proc` as soon as it has made `writes` write(2)-family calls (/proc/PID/io syscw):
    a kill at a chosen point of a write protocol (an LMDB commit writes its pages, then its meta page).
    Returns 1 if it was killed that way, 0 if it exited (or the deadline passed) first."""
    deadline = time.monotonic() + timeout
    path = "/proc/%d/io" % proc.pid
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open(path) as f:
                match = re.search(r"^syscw:\s*(\d+)", f.read(), re.M)
        except OSError:
            break
        if match and int(match.group(1)) >= writes:
            proc.send_signal(signal.SIGKILL)
            return 1
    proc.send_signal(signal.SIGKILL)
    return 0


def with_tls(upstreams, tls=None):
    """Gives every https:// upstream in `upstreams` (name -> settings, changed in place and returned)
    `tls: <tls>` unless it has its own; default {"ca_file": <the test CA>}."""
    for settings in upstreams.values():
        if str(settings.get("base_url", "")).startswith("https://") and "tls" not in settings:
            settings["tls"] = dict(tls) if tls is not None else {"ca_file": test_pki().ca_file}
    return upstreams


# ------------------------------------------------------------------------------------------------
# Base test case
# ------------------------------------------------------------------------------------------------

def _canary(tag):
    return "%s-%s" % (tag, _secrets.token_hex(12))


class KeywayTestCase(unittest.TestCase):
    """One fake upstream and one keywayd per class.

    Standard set-up (override the class hooks to change it):
      upstreams  bundleup-api, bundleup-proxy, bundleup-unify (compat listeners on), bundleiq, all
                 pointing at the one fake.
      teams      alpha (all upstreams), beta (all, with its own bundleup.api_key),
                 iqonly (bundleiq only)
      clients    app-alpha, app-beta, app-iq -> cls.tokens[name]
      secrets    shared bundleup.api_key / bundleiq.api_key, beta's bundleup.api_key -> cls.secrets
    """

    fake = None
    kw = None
    LIMITS = {"max_body_bytes": 65536}
    # True: the fake serves TLS (a certificate of the test CA for 127.0.0.1) and every https://
    # upstream trusts that CA (with_tls). The tests themselves stay as they are.
    TLS = False

    @classmethod
    def make_fake(cls, **kw):
        """A started FakeUpstream, serving TLS when the class says TLS = True."""
        if cls.TLS:
            kw.setdefault("ssl_context", test_pki().server_context())
        return FakeUpstream(**kw).start()

    @classmethod
    def upstreams(cls):
        f = cls.fake.url
        return {
            "bundleup-api": {"base_url": f, "compat_listen": "127.0.0.1:0"},
            "bundleup-proxy": {"base_url": f, "compat_listen": "127.0.0.1:0"},
            "bundleup-unify": {"base_url": f, "compat_listen": "127.0.0.1:0"},
            "bundleiq": {"base_url": f},
        }

    @classmethod
    def extra_config(cls):
        return {}

    @classmethod
    def provision(cls):
        kw = cls.kw
        cls.secrets = {
            "bundleup": _canary("bu-shared"),
            "bundleiq": _canary("iq-shared"),
            "bundleup@beta": _canary("bu-beta"),
        }
        kw.add_team("alpha")
        kw.add_team("beta")
        kw.add_team("iqonly", upstreams=["bundleiq"])
        kw.set_secret("bundleup.api_key", cls.secrets["bundleup"])
        kw.set_secret("bundleiq.api_key", cls.secrets["bundleiq"])
        kw.set_secret("bundleup.api_key", cls.secrets["bundleup@beta"], team="beta")
        cls.tokens = {
            "app-alpha": kw.add_client("app-alpha", "alpha"),
            "app-beta": kw.add_client("app-beta", "beta"),
            "app-iq": kw.add_client("app-iq", "iqonly"),
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = cls.make_fake()
        cls.addClassCleanup(cls.fake.stop)
        cls.kw = Keyway(with_tls(cls.upstreams()), limits=cls.LIMITS, extra=cls.extra_config())
        cls.addClassCleanup(cls.kw.cleanup)
        cls.kw.init()
        cls.provision()
        cls.kw.start()

    def setUp(self):
        self.fake.reset()

    def tearDown(self):
        if self.TLS:
            self.assertAllOverTls(self.fake.requests)

    def assertAllOverTls(self, reqs):
        """Every request the fake got came over TLS (HTTP/1.1 by ALPN): the TLS switch is real."""
        for r in reqs:
            self.assertIsNotNone(r.tls, "a request reached the fake without TLS: %r" % r)
            self.assertEqual(r.tls["alpn"], "http/1.1", r.tls)

    # -- helpers --
    @property
    def port(self):
        return self.kw.main_port

    def token(self, client="app-alpha"):
        return self.tokens[client]

    def call(self, method, target, headers=None, body=None, client="app-alpha", port=None, **kw):
        """One request to keywayd with X-Keyway-Token of `client` (None: no token)."""
        hdrs = _norm_headers(headers)
        if client is not None:
            hdrs.append(("X-Keyway-Token", self.tokens[client]))
        return request(port or self.port, method, target, hdrs, body, **kw)

    def only_request(self, timeout=5.0):
        """The single request the fake received (fails if it got none or several)."""
        reqs = self.fake.wait_for_requests(1, timeout)
        self.assertEqual(len(reqs), 1, "expected exactly one upstream request, got %r" % reqs)
        return reqs[0]

    # Standard phrases that RFC 9110 renamed: either spelling is standard.
    REASON_ALIASES = {
        "Payload Too Large": ("Payload Too Large", "Content Too Large", "Request Entity Too Large"),
        "Unprocessable Entity": ("Unprocessable Entity", "Unprocessable Content"),
    }

    def assertKeywayError(self, resp, status, code, reason=None):
        """Asserts an error produced by keyway itself (docs/errors.md): status, standard reason phrase,
        JSON body {"error": {"code", "message", "details": [...]}}."""
        self.assertEqual(resp.status, status, resp)
        if reason is not None:
            self.assertIn(resp.reason, self.REASON_ALIASES.get(reason, (reason,)), resp)
        self.assertIn("json", (resp.header("Content-Type") or "").lower(), resp)
        doc = resp.json()
        self.assertIsInstance(doc.get("error"), dict, resp)
        self.assertEqual(doc["error"].get("code"), code, resp)
        self.assertIsInstance(doc["error"].get("message"), str, resp)
        self.assertTrue(doc["error"]["message"], resp)
        self.assertIsInstance(doc["error"].get("details"), list, resp)
        return doc

    def assertNotForwarded(self, wait=0.3):
        time.sleep(wait)
        self.assertEqual(self.fake.requests, [], "the upstream must not have been contacted")
