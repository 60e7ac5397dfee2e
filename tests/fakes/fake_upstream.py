#!/usr/bin/env python3
"""fake_upstream.py: a scriptable HTTP/1.1 upstream on raw sockets, for keyway's integration tests and benches.

It is deliberately NOT built on http.server: tests need the raw request-target byte for byte, header
order and spelling, repeated headers, keep-alive and per-connection accounting. Python 3 stdlib only.

In-process use:

    fake = FakeUpstream().start()               # 127.0.0.1, ephemeral port: fake.port / fake.url
    fake.route("GET", "/v1/things", Response(200, body=b'{"ok":true}',
                                             headers=[("Content-Type", "application/json")]))
    fake.route("*", "/slow/*", Response(delay=1.0))          # '*' suffix = prefix match
    ... drive traffic ...
    req = fake.last_request()                   # RecordedRequest: conn_id, method, target, headers, body
    fake.reset()                                # forget requests and routes (counters kept)
    fake.stop()

Unrouted requests get an echo: 200 with a JSON description of the request as received.

TLS: FakeUpstream(ssl_context=ctx) serves https:// (url says so) with a server-side ssl.SSLContext,
e.g. tls_ca.test_pki().server_context() (ALPN "http/1.1"; require_client_cert=True for mutual TLS).
The handshake runs on the connection's own thread. Each RecordedRequest then has `tls`: the facts of
its connection (version, cipher, alpn, client certificate subject CN / organisation, or None), and
tls_handshakes_ok / tls_handshakes_failed / tls_failures count the rest.

Command line (benchmarks, manual poking); prints one JSON line with the bound address, then serves
until SIGINT/SIGTERM:

    fake_upstream.py [--host H] [--port P] [--status N] [--delay S] [--body TEXT | --body-size N]
                     [--content-type T] [--routes FILE.json] [--no-record] [--verbose]

FILE.json is a list of {"method", "path", "status", "reason", "headers": [[n, v], ...], "body",
"body_size", "delay", "chunks": [...], "chunk_delay", "sse": [...], "sse_delay", "close_after",
"garbage", "stall", "close"} objects (same meaning as the Response arguments).

Thread-safety: every public method may be called from any thread. One thread per connection.
"""

import argparse
import base64
import http
import json
import re
import signal
import socket
import ssl
import sys
import threading
import time

__all__ = ["FakeUpstream", "Response", "RecordedRequest", "sse_event"]

_MAX_HEAD_BYTES = 1 << 20
_NO_BODY_STATUSES = (204, 304)


def _reason_for(status):
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def sse_event(data, event=None, event_id=None):
    """Formats one Server-Sent Event (data may hold newlines) as bytes, blank line included."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    out = []
    if event_id is not None:
        out.append("id: %s" % event_id)
    if event is not None:
        out.append("event: %s" % event)
    for line in data.split("\n"):
        out.append("data: %s" % line)
    return ("\n".join(out) + "\n\n").encode("utf-8")


class RecordedRequest:
    """One request exactly as the fake received it. `target` is the raw request-target (latin-1)."""

    def __init__(self, conn_id, seq, method, target, version, headers, body, chunked, received_at, tls=None):
        self.conn_id = conn_id          # 1-based id of the TCP connection it arrived on
        self.seq = seq                  # 1-based index of the request on that connection
        self.method = method
        self.target = target
        self.version = version          # "HTTP/1.1"
        self.headers = headers          # [(name, value)], original spelling and order
        self.body = body                # bytes, de-chunked
        self.chunked = chunked          # the body came with Transfer-Encoding: chunked
        self.received_at = received_at  # time.monotonic()
        # TLS facts of the connection (None over plain TCP): {"version", "cipher", "alpn",
        # "client_subject" (CN of the client certificate, or None), "client_org"}.
        self.tls = tls

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def query(self):
        return self.target.split("?", 1)[1] if "?" in self.target else None

    def header(self, name, default=None):
        """First value of header `name` (case-insensitive), or default."""
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

    def to_json(self):
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return {
            "conn": self.conn_id, "seq": self.seq, "method": self.method, "target": self.target,
            "path": self.path, "query": self.query, "version": self.version,
            "headers": [[n, v] for n, v in self.headers],
            "body": text, "body_b64": base64.b64encode(self.body).decode("ascii"),
            "chunked": self.chunked, "tls": self.tls,
        }

    def __repr__(self):
        return "<RecordedRequest conn=%d %s %s %d bytes>" % (self.conn_id, self.method, self.target,
                                                             len(self.body))


class Response:
    """A scripted answer. Exactly one delivery mode applies, checked in this order:

    garbage      bytes sent as the whole "response", then the connection is closed.
    raw          bytes sent verbatim as the whole response (keep-alive unless close=True).
    stall        never answer; hold the connection until the peer closes it or the fake stops.
    sse          list of items streamed with chunked encoding and Content-Type text/event-stream:
                 bytes/str (sent as one chunk, str formatted with sse_event), a float/int (sleep that
                 many seconds), or a threading.Event (wait until it is set). sse_delay sleeps before
                 each str/bytes item after the first.
    chunks       list of items streamed with chunked encoding: bytes/str chunks, float sleeps,
                 threading.Event gates; chunk_delay sleeps between chunks.
    close_after  announce Content-Length of the full body, send only that many body bytes, close.
    otherwise    a plain response with Content-Length (unless the headers carry one already, or
                 close_delimited=True: no length, body ends at close).

    delay is slept before anything is sent. close=True adds "Connection: close" and closes after.
    headers is a list of (name, value) sent in order, repeats allowed; body is bytes or str.
    """

    def __init__(self, status=200, reason=None, headers=None, body=b"", delay=0.0, chunks=None,
                 chunk_delay=0.0, sse=None, sse_delay=0.0, close_after=None, garbage=None, raw=None,
                 stall=False, close=False, close_delimited=False):
        self.status = int(status)
        self.reason = reason if reason is not None else _reason_for(self.status)
        self.headers = list(headers or [])
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        self.delay = float(delay)
        self.chunks = chunks
        self.chunk_delay = float(chunk_delay)
        self.sse = sse
        self.sse_delay = float(sse_delay)
        self.close_after = close_after
        self.garbage = garbage
        self.raw = raw
        self.stall = stall
        self.close = close
        self.close_delimited = close_delimited

    @staticmethod
    def json(obj, status=200, headers=None, **kw):
        hdrs = [("Content-Type", "application/json")] + list(headers or [])
        return Response(status, headers=hdrs, body=json.dumps(obj).encode("utf-8"), **kw)

    @staticmethod
    def from_dict(d):
        """Builds a Response from the JSON route format of the command line."""
        body = d.get("body", "")
        if "body_size" in d:
            body = b"x" * int(d["body_size"])
        return Response(
            status=d.get("status", 200), reason=d.get("reason"),
            headers=[tuple(h) for h in d.get("headers", [])], body=body,
            delay=d.get("delay", 0.0), chunks=d.get("chunks"), chunk_delay=d.get("chunk_delay", 0.0),
            sse=d.get("sse"), sse_delay=d.get("sse_delay", 0.0), close_after=d.get("close_after"),
            garbage=d["garbage"].encode("latin-1") if "garbage" in d else None,
            stall=d.get("stall", False), close=d.get("close", False))


class _Route:
    def __init__(self, method, path, response, times):
        self.method = method.upper()
        self.path = path
        self.response = response      # Response or callable(RecordedRequest) -> Response
        self.times = times            # None = forever

    def matches(self, req):
        if self.method != "*" and self.method != req.method:
            return False
        if isinstance(self.path, re.Pattern):
            return bool(self.path.search(req.target))
        if self.path.endswith("*"):
            return req.target.startswith(self.path[:-1])
        if "?" in self.path:
            return req.target == self.path
        return req.path == self.path


class _ClientGone(Exception):
    pass


class FakeUpstream:
    """A threaded HTTP/1.1 origin server on 127.0.0.1 (port 0 by default). See the module doc."""

    def __init__(self, host="127.0.0.1", port=0, record=True, default=None, verbose=False, ssl_context=None):
        self.host = host
        self._ssl = ssl_context       # server-side ssl.SSLContext: serve TLS (None = plain TCP)
        self._tls_ok = 0
        self._tls_failed = 0
        self._tls_failures = []
        self._requested_port = port
        self._record = record
        self._default = default       # Response used when no route matches (None = echo)
        self._verbose = verbose
        self._lock = threading.Condition()
        self._routes = []
        self._requests = []
        self._conn_total = 0
        self._conn_open = 0
        self._request_total = 0
        self._socks = set()
        self._threads = set()
        self._stop = threading.Event()
        self._listener = None
        self._accept_thread = None
        self.port = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self):
        # Thousands of connection threads: keep their stacks small (process-wide setting, harmless).
        if threading.stack_size() == 0:
            threading.stack_size(512 * 1024)
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self._requested_port))
        ls.listen(4096)
        ls.settimeout(0.2)
        self._listener = ls
        self.port = ls.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="fake-accept", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self):
        """Closes the listener and every connection; wakes stalled and gated responses."""
        self._stop.set()
        if self._accept_thread:
            self._accept_thread.join(5)
        if self._listener:
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(2)

    def __enter__(self):
        return self.start() if self.port is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self._ssl is not None else "http", self.host, self.port)

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    # ---- scripting ------------------------------------------------------------------------------
    def route(self, method, path, response, times=None):
        """Adds a route; the most recently added matching route wins.

        path: exact path (query ignored); contains '?': exact raw target; ends with '*': prefix of
        the raw target; a compiled re.Pattern: searched in the raw target. response: Response or
        callable(RecordedRequest) -> Response. times: serve that many requests, then drop the route.
        """
        with self._lock:
            self._routes.insert(0, _Route(method, path, response, times))

    def clear_routes(self):
        with self._lock:
            self._routes = []

    def clear_log(self):
        with self._lock:
            self._requests = []

    def reset(self):
        """Forgets recorded requests and routes. Connection counters keep counting."""
        with self._lock:
            self._routes = []
            self._requests = []

    # ---- inspection ------------------------------------------------------------------------------
    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def last_request(self):
        with self._lock:
            return self._requests[-1] if self._requests else None

    def find(self, predicate):
        """Recorded requests for which predicate(req) is true."""
        return [r for r in self.requests if predicate(r)]

    def wait_for_requests(self, count, timeout=10.0):
        """Blocks until at least `count` requests are recorded; returns them (may be fewer on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self._requests)

    @property
    def connections_accepted(self):
        with self._lock:
            return self._conn_total

    @property
    def connections_open(self):
        with self._lock:
            return self._conn_open

    @property
    def tls_handshakes_ok(self):
        with self._lock:
            return self._tls_ok

    @property
    def tls_handshakes_failed(self):
        with self._lock:
            return self._tls_failed

    @property
    def tls_failures(self):
        """str() of every failed handshake's error, in order (e.g. the client's alert)."""
        with self._lock:
            return list(self._tls_failures)

    @property
    def request_count(self):
        """Requests parsed since start (counted even with record=False)."""
        with self._lock:
            return self._request_total

    # ---- server ----------------------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)  # EMFILE and friends: back off rather than spin
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conn_total += 1
                self._conn_open += 1
                conn_id = self._conn_total
                self._socks.add(sock)
            t = threading.Thread(target=self._serve_connection, args=(sock, conn_id),
                                 name="fake-conn-%d" % conn_id, daemon=True)
            with self._lock:
                self._threads.add(t)
            t.start()

    def _handshake(self, raw):
        """Wraps an accepted socket in TLS; returns (tls socket, facts), or (None, None) if it failed."""
        raw.settimeout(10)
        try:
            tls = self._ssl.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as e:
            self._handshake_failed(e, raw)
            return None, None
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as e:
            # A TLS 1.3 server refuses a client certificate after the client finished its side, so
            # its alert races the client's first write: closing at once can turn the alert into a
            # reset. A moment's wait lets the client read it, so tests see one outcome.
            self._stop.wait(0.2)
            self._handshake_failed(e, tls)
            return None, None
        tls.settimeout(None)
        subject = dict(x[0] for x in (tls.getpeercert() or {}).get("subject", ()))
        facts = {"version": tls.version(), "cipher": (tls.cipher() or (None,))[0],
                 "alpn": tls.selected_alpn_protocol(), "client_subject": subject.get("commonName"),
                 "client_org": subject.get("organizationName")}
        with self._lock:
            self._tls_ok += 1
            self._socks.discard(raw)
            self._socks.add(tls)
        return tls, facts

    def _handshake_failed(self, error, sock):
        with self._lock:
            self._tls_failed += 1
            self._tls_failures.append(str(error))
        try:
            sock.close()
        except OSError:
            pass

    def _serve_connection(self, sock, conn_id):
        buf = bytearray()
        seq = 0
        tls_facts = None
        try:
            if self._ssl is not None:
                raw = sock
                sock, tls_facts = self._handshake(raw)
                if sock is None:
                    sock = raw  # closed already; the bookkeeping below still runs
                    return
            while not self._stop.is_set():
                req = self._read_request(sock, buf, conn_id, seq + 1, tls_facts)
                if req is None:
                    return
                seq += 1
                keep_alive = self._wants_keep_alive(req)
                response = self._select_response(req)
                if self._verbose:
                    print("fake: %s %s -> %d" % (req.method, req.target, response.status),
                          file=sys.stderr, flush=True)
                if not self._send_response(sock, req, response, keep_alive):
                    return
        except (_ClientGone, OSError):
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self._lock:
                self._conn_open -= 1
                self._socks.discard(sock)
                self._threads.discard(threading.current_thread())

    def _recv_more(self, sock, buf):
        data = sock.recv(65536)
        if not data:
            raise _ClientGone()
        buf += data

    def _read_request(self, sock, buf, conn_id, seq, tls_facts=None):
        # Head.
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > _MAX_HEAD_BYTES:
                sock.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
                             b"Content-Length: 0\r\n\r\n")
                return None
            try:
                self._recv_more(sock, buf)
            except _ClientGone:
                return None
        head = bytes(buf[:end]).decode("latin-1")
        del buf[:end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            return None
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                return None
            headers.append((name, value.strip(" \t")))
        req = RecordedRequest(conn_id, seq, method, target, version, headers, b"", False, time.monotonic(),
                              tls_facts)

        te = ",".join(req.header_all("Transfer-Encoding")).lower()
        cl = req.header("Content-Length")
        has_body = "chunked" in te or (cl is not None and cl.strip() not in ("", "0"))
        if has_body and (req.header("Expect") or "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in te:
            req.chunked = True
            req.body = self._read_chunked(sock, buf)
        elif cl is not None:
            try:
                n = int(cl.strip())
            except ValueError:
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                return None
            while len(buf) < n:
                self._recv_more(sock, buf)
            req.body = bytes(buf[:n])
            del buf[:n]
        with self._lock:
            self._request_total += 1
            if self._record:
                self._requests.append(req)
            self._lock.notify_all()
        return req

    def _read_line(self, sock, buf):
        while True:
            i = buf.find(b"\r\n")
            if i >= 0:
                line = bytes(buf[:i])
                del buf[:i + 2]
                return line
            self._recv_more(sock, buf)

    def _read_chunked(self, sock, buf):
        body = bytearray()
        while True:
            size_line = self._read_line(sock, buf).split(b";", 1)[0].strip()
            size = int(size_line, 16)
            if size == 0:
                while self._read_line(sock, buf):  # trailers, up to the empty line
                    pass
                return bytes(body)
            while len(buf) < size + 2:
                self._recv_more(sock, buf)
            body += buf[:size]
            del buf[:size + 2]

    @staticmethod
    def _wants_keep_alive(req):
        tokens = {t.strip().lower() for v in req.header_all("Connection") for t in v.split(",")}
        if req.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def _select_response(self, req):
        chosen = None
        with self._lock:
            for r in self._routes:
                if r.matches(req):
                    chosen = r
                    if r.times is not None:
                        r.times -= 1
                        if r.times <= 0:
                            self._routes.remove(r)
                    break
        if chosen is None:
            if self._default is not None:
                return self._default
            return Response.json(req.to_json())
        resp = chosen.response
        return resp(req) if callable(resp) else resp

    def _sleep(self, seconds):
        if seconds > 0:
            self._stop.wait(seconds)

    def _wait_item(self, item):
        if isinstance(item, threading.Event):
            while not item.wait(0.1):
                if self._stop.is_set():
                    raise _ClientGone()
        elif isinstance(item, (int, float)):
            self._sleep(float(item))

    def _send_response(self, sock, req, resp, keep_alive):
        """Sends `resp`; returns whether the connection stays open."""
        self._sleep(resp.delay)
        if self._stop.is_set():
            return False
        if resp.garbage is not None:
            sock.sendall(resp.garbage)
            return False
        if resp.raw is not None:
            sock.sendall(resp.raw)
            return keep_alive and not resp.close
        if resp.stall:
            sock.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    if not sock.recv(65536):
                        return False
                except socket.timeout:
                    continue
            return False

        keep = keep_alive and not resp.close and not resp.close_delimited
        headers = list(resp.headers)
        names = {n.lower() for n, _ in headers}
        streaming = resp.sse is not None or resp.chunks is not None
        if resp.sse is not None and "content-type" not in names:
            headers.append(("Content-Type", "text/event-stream"))
            headers.append(("Cache-Control", "no-cache"))
        no_body = req.method == "HEAD" or resp.status in _NO_BODY_STATUSES or resp.status < 200
        if streaming and not no_body:
            if "transfer-encoding" not in names:
                headers.append(("Transfer-Encoding", "chunked"))
        elif ("content-length" not in names and "transfer-encoding" not in names
              and not resp.close_delimited and resp.status not in _NO_BODY_STATUSES
              and resp.status >= 200):
            headers.append(("Content-Length", str(len(resp.body))))
        if not keep and "connection" not in names:
            headers.append(("Connection", "close"))
        head = "HTTP/1.1 %d %s\r\n" % (resp.status, resp.reason)
        head += "".join("%s: %s\r\n" % (n, v) for n, v in headers) + "\r\n"
        head_bytes = head.encode("latin-1")

        if no_body:
            sock.sendall(head_bytes)
            return keep
        if resp.close_after is not None:
            sock.sendall(head_bytes + resp.body[:int(resp.close_after)])
            return False
        if not streaming:
            sock.sendall(head_bytes + resp.body)
            return keep

        sock.sendall(head_bytes)
        items = resp.sse if resp.sse is not None else resp.chunks
        gap = resp.sse_delay if resp.sse is not None else resp.chunk_delay
        sent_any = False
        for item in items:
            if isinstance(item, (bytes, bytearray, str)):
                if isinstance(item, str):
                    item = sse_event(item) if resp.sse is not None else item.encode("utf-8")
                if sent_any:
                    self._sleep(gap)
                if item:
                    sock.sendall(b"%x\r\n" % len(item) + bytes(item) + b"\r\n")
                sent_any = True
            else:
                self._wait_item(item)
            if self._stop.is_set():
                return False
        sock.sendall(b"0\r\n\r\n")
        return keep


def _main(argv=None):
    ap = argparse.ArgumentParser(description="Scriptable fake HTTP/1.1 upstream (keyway tests/bench).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--status", type=int, default=None, help="default answer status (default: echo)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each default answer")
    ap.add_argument("--body", default=None, help="default answer body")
    ap.add_argument("--body-size", type=int, default=None, help="default answer body of N bytes")
    ap.add_argument("--content-type", default="application/json")
    ap.add_argument("--routes", default=None, help="JSON file with a list of routes")
    ap.add_argument("--no-record", action="store_true", help="count requests, do not keep them")
    ap.add_argument("--verbose", action="store_true", help="one line per request on stderr")
    args = ap.parse_args(argv)

    default = None
    if args.status is not None or args.body is not None or args.body_size is not None or args.delay:
        body = b"x" * args.body_size if args.body_size is not None else (args.body or '{"ok":true}')
        default = Response(args.status or 200, headers=[("Content-Type", args.content_type)],
                           body=body, delay=args.delay)
    fake = FakeUpstream(args.host, args.port, record=not args.no_record, default=default,
                        verbose=args.verbose)
    if args.routes:
        with open(args.routes, encoding="utf-8") as f:
            for d in json.load(f):
                fake.route(d.get("method", "*"), d.get("path", "*"), Response.from_dict(d))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    fake.start()
    print(json.dumps({"msg": "listening", "address": fake.address, "port": fake.port}), flush=True)
    while not done.wait(0.5):
        pass
    fake.stop()
    print(json.dumps({"msg": "stopped", "connections": fake.connections_accepted,
                      "requests": fake.request_count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
