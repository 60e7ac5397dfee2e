"""test_connections.py: connection behaviour (docs/http.md): keep-alive, Connection: close, HTTP/1.0, upstream
connection reuse, thousands of requests waiting on a slow upstream at once, and SSE streaming."""

import json
import socket
import struct
import threading
import time

from harness import (Keyway, KeywayTestCase, RawConnection, Response, build_request, concurrent_requests, http_client,
                     request)


def _echo_target(resp):
    return json.loads(resp.body.decode("utf-8"))["target"]


class KeepAliveTest(KeywayTestCase):

    def test_thousand_sequential_requests_on_one_connection(self):
        tok = [("X-Keyway-Token", self.token())]
        answered = 0
        with RawConnection(self.port, timeout=15) as c:
            for i in range(1000):
                try:
                    resp = c.request("GET", "/bundleup-proxy/ka/%d?i=%d" % (i, i), tok)
                except OSError as e:  # ConnectionClosed, reset, timeout
                    self.fail("request %d on the kept-alive connection failed: %r" % (i, e))
                self.assertEqual(resp.status, 200, "request %d: %r" % (i, resp))
                self.assertEqual(_echo_target(resp), "/ka/%d?i=%d" % (i, i))
                self.assertNotIn("close", resp.connection_tokens(), "request %d announced close" % i)
                answered += 1
            self.assertFalse(c.peer_closed(0.5), "keywayd closed the connection after 1,000 requests")
            self.assertEqual(c.request("GET", "/bundleup-proxy/ka/last", tok).status, 200)
        self.assertEqual(answered, 1000)
        self.assertEqual(len(self.fake.requests), 1001)

    def test_stdlib_http_client_keeps_one_connection(self):
        # http.client parses responses on its own and reuses its socket only while the server keeps it.
        self.fake.route("GET", "/std/chunked", Response(chunks=[b"ab", b"cd"]))
        conn = http_client(self.port)
        try:
            for i in range(20):
                conn.request("GET", "/bundleup-proxy/std/%d" % i, headers={"X-Keyway-Token": self.token()})
                resp = conn.getresponse()
                self.assertEqual(resp.status, 200)
                self.assertEqual(json.loads(resp.read())["target"], "/std/%d" % i)
                sock = conn.sock
                self.assertIsNotNone(sock, "the server closed the connection after request %d" % i)
                if i == 0:
                    first_sock = sock
                self.assertIs(sock, first_sock, "http.client had to reconnect at request %d" % i)
            conn.request("POST", "/bundleup-proxy/std/post", body=b'{"a":1}',
                         headers={"X-Keyway-Token": self.token(), "Content-Type": "application/json"})
            resp = conn.getresponse()
            self.assertEqual((resp.status, resp.reason), (200, "OK"))
            self.assertEqual(json.loads(resp.read())["body"], '{"a":1}')
            conn.request("GET", "/bundleup-proxy/std/chunked", headers={"X-Keyway-Token": self.token()})
            self.assertEqual(conn.getresponse().read(), b"abcd")
        finally:
            conn.close()
        self.assertEqual(len(self.fake.requests), 22)

    def test_upstream_connections_are_reused(self):
        before = self.fake.connections_accepted
        with RawConnection(self.port) as c:
            for i in range(50):
                self.assertEqual(c.request("GET", "/bundleup-proxy/pool/%d" % i,
                                           [("X-Keyway-Token", self.token())]).status, 200)
        opened = self.fake.connections_accepted - before
        self.assertLessEqual(opened, 5, "50 sequential requests opened %d upstream connections" % opened)

    def test_connection_close_honoured(self):
        with RawConnection(self.port) as c:
            resp = c.request("GET", "/bundleup-proxy/bye", [("X-Keyway-Token", self.token()), ("Connection", "close")])
            self.assertEqual(resp.status, 200)
            self.assertIn("close", resp.connection_tokens())
            self.assertTrue(c.peer_closed(3), "keywayd kept the connection open after Connection: close")

    def test_http10_closes_by_default(self):
        with RawConnection(self.port) as c:
            resp = c.request("GET", "/bundleup-proxy/old", [("X-Keyway-Token", self.token())], version="HTTP/1.0")
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(_echo_target(resp), "/old")
            self.assertTrue(c.peer_closed(3), "keywayd kept an HTTP/1.0 connection open")

    def test_http10_error_also_closes(self):
        with RawConnection(self.port) as c:
            resp = c.request("GET", "/nope/x", [("X-Keyway-Token", self.token())], version="HTTP/1.0")
            self.assertEqual(resp.status, 404)
            self.assertTrue(c.peer_closed(3))

    def test_keyway_errors_keep_the_connection(self):
        with RawConnection(self.port) as c:
            self.assertEqual(c.request("GET", "/bundleup-proxy/x").status, 401)
            self.assertEqual(c.request("GET", "/nope/x", [("X-Keyway-Token", self.token())]).status, 404)
            resp = c.request("GET", "/bundleup-proxy/x", [("X-Keyway-Token", self.token())])
            self.assertEqual(resp.status, 200)

    def test_idle_connection_stays_usable(self):
        with RawConnection(self.port) as c:
            self.assertEqual(c.request("GET", "/bundleup-proxy/i1", [("X-Keyway-Token", self.token())]).status, 200)
            time.sleep(2)
            self.assertFalse(c.peer_closed(0.1))
            self.assertEqual(c.request("GET", "/bundleup-proxy/i2", [("X-Keyway-Token", self.token())]).status, 200)

    def test_pipelined_requests_answered_in_order(self):
        tok = [("X-Keyway-Token", self.token())]
        with RawConnection(self.port) as c:
            c.send(b"".join(build_request("GET", "/bundleup-proxy/pipe/%d" % i, tok) for i in range(5)))
            got = [_echo_target(c.read_response()) for _ in range(5)]
        self.assertEqual(got, ["/pipe/%d" % i for i in range(5)])

    def test_requests_spanning_many_reads_arrive_whole(self):
        # keywayd reads a connection 16 KiB at a time and stops at a short read (one recv() per
        # readable event, not Pistache's read-until-EAGAIN): 40 pipelined ~1 KB heads and a 40 KiB
        # body sent at once fill several reads, and every byte must still arrive, in order.
        tok = [("X-Keyway-Token", self.token()), ("X-Pad", "p" * 900)]
        body = bytes(range(256)) * 160
        with RawConnection(self.port, timeout=15) as c:
            c.send(b"".join(build_request("GET", "/bundleup-proxy/span/%d" % i, tok) for i in range(40))
                   + build_request("POST", "/bundleup-proxy/span/body",
                                   tok + [("Content-Type", "application/octet-stream")], body))
            got = [_echo_target(c.read_response()) for _ in range(41)]
            self.assertFalse(c.peer_closed(0.2))
        self.assertEqual(got, ["/span/%d" % i for i in range(40)] + ["/span/body"])
        self.assertEqual(self.fake.requests[-1].body, body)
        self.assertEqual(self.fake.requests[0].header("X-Pad"), "p" * 900)


def listen_backlog(port):
    """The listen(2) backlog of the TCP socket listening on 127.0.0.1:port, read from the kernel
    through NETLINK_SOCK_DIAG (what `ss -lt` shows as Send-Q): for a listening socket
    inet_diag_msg.idiag_wqueue is the backlog. None if no such socket is found."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
    try:
        # inet_diag_req_v2: family, protocol, ext, pad, states (1 << TCP_LISTEN), then an empty
        # inet_diag_sockid (ports, addresses, interface, cookie): dump every listening socket.
        req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
        hdr = struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0)  # SOCK_DIAG_BY_FAMILY, REQUEST|DUMP
        nl.sendto(hdr + req, (0, 0))
        while True:
            data = nl.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == 3:  # NLMSG_DONE
                    return None
                if kind == 2:  # NLMSG_ERROR
                    raise OSError("sock_diag refused the dump")
                # inet_diag_msg: family, state, timer, retrans, then sockid (sport, dport: big
                # endian), ..., expires, rqueue, wqueue, uid, inode.
                msg = data[off + 16:off + length]
                sport = struct.unpack_from("!H", msg, 4)[0]
                rqueue, wqueue = struct.unpack_from("=II", msg, 4 + 48 + 4)
                if sport == port:
                    return wqueue
                off += (length + 3) & ~3
    finally:
        nl.close()


class ListenBacklogTest(KeywayTestCase):
    """server.listen_backlog reaches listen(2): Pistache's own default (128) overflowed when a
    client pool opened a thousand connections at once (bench (c))."""

    def test_default_backlog_is_4096_or_the_kernels_cap(self):
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
        self.assertEqual(listen_backlog(self.port), min(4096, somaxconn))

    def test_configured_backlog(self):
        kw = Keyway(self.upstreams(), extra={"server": {"listen_backlog": 200}})
        self.addCleanup(kw.cleanup)
        kw.init()
        kw.start()
        self.assertEqual(listen_backlog(kw.main_port), 200)


class ConcurrencyTest(KeywayTestCase):
    N = 2000

    def test_2000_concurrent_requests_on_a_slow_upstream(self):
        self.fake.route("GET", "/slow/*", lambda req: Response(headers=[("Content-Type", "text/plain")],
                                                                body=req.target.encode(), delay=1.0))
        tok = ("X-Keyway-Token", self.token())
        raws = [build_request("GET", "/bundleup-proxy/slow/%d" % i, [("Host", "127.0.0.1:%d" % self.port), tok])
                for i in range(self.N)]
        t0 = time.monotonic()
        results = concurrent_requests(self.port, raws, timeout=60)
        took = time.monotonic() - t0
        bad = []
        for i, r in enumerate(results):
            if isinstance(r, Exception):
                bad.append((i, repr(r)))
            elif r.status != 200 or r.body != ("/slow/%d" % i).encode():
                bad.append((i, r.status, r.body[:80]))
        self.assertEqual(bad, [], "%d of %d requests failed; first: %r" % (len(bad), self.N, bad[:5]))
        self.assertEqual(len(self.fake.requests), self.N)
        self.assertLess(took, 30, "2,000 requests on a 1 s upstream took %.1fs" % took)
        self.assertTrue(self.kw.running)

    def test_daemon_still_serves_after_the_burst(self):
        resp = self.call("GET", "/bundleup-proxy/after-burst")
        self.assertEqual(resp.status, 200)


class StreamingTest(KeywayTestCase):

    def _stream(self, port, method, target, headers, body=None):
        gate = threading.Event()
        self.fake.route(method, target.split("?")[0].replace("/bundleup-proxy", "", 1) or "/",
                        Response(headers=[("Content-Type", "text/event-stream"), ("Mcp-Session-Id", "s-1")],
                                 sse=["first", gate, "second"]))
        with RawConnection(port, timeout=10) as c:
            c.send_request(method, target, headers, body)
            try:
                head = c.read_head(timeout=5)
                got = c.read_stream_until(b"data: first\n\n", timeout=5)
            except (socket.timeout, OSError) as e:
                self.fail("the first SSE event did not reach the client while the upstream held the "
                          "second back (response buffered?): %r" % e)
            finally:
                gate.set()
            self.assertEqual(head.status, 200, head)
            self.assertEqual(head.header("Content-Type"), "text/event-stream")
            self.assertEqual(head.header("Mcp-Session-Id"), "s-1")
            self.assertNotIn(b"second", got)
            got = c.read_stream_until(b"data: second\n\n", timeout=5)
            self.assertEqual(got, b"data: first\n\ndata: second\n\n")

    def test_sse_first_event_before_second_is_sent(self):
        self._stream(self.port, "GET", "/bundleup-proxy/events",
                     [("X-Keyway-Token", self.token()), ("Accept", "text/event-stream")])

    def test_sse_on_post_through_compat(self):
        # MCP Streamable HTTP shape: POST JSON-RPC, answer as an event stream.
        self._stream(self.kw.compat_ports["bundleup-proxy"], "POST", "/",
                     [("Authorization", "Bearer " + self.token()), ("BU-Connection-Id", "conn_1"),
                      ("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")],
                     b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
        r = self.fake.requests[0]
        self.assertEqual(r.body, b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')

    def test_large_body_streams(self):
        # docs/http.md: SSE and large proxy bodies are streamed, not buffered whole.
        gate = threading.Event()
        first, rest = b"A" * (1 << 20), b"B" * (1 << 20)
        self.fake.route("GET", "/big", Response(headers=[("Content-Type", "application/octet-stream")],
                                                chunks=[first[:65536], first[65536:], gate, rest]))
        with RawConnection(self.port, timeout=10) as c:
            c.send_request("GET", "/bundleup-proxy/big", [("X-Keyway-Token", self.token())])
            try:
                c.read_head(timeout=5)
                got = c.read_stream_until(b"A" * 65536, timeout=5)
            except (socket.timeout, OSError) as e:
                self.fail("no byte of a 2 MiB body reached the client while the upstream held its second "
                          "half back (body buffered whole?): %r" % e)
            finally:
                gate.set()
            self.assertNotIn(b"B", got)
            got = c.read_stream_until(b"B" * len(rest), timeout=10)
            self.assertEqual(got, first + rest)

    def test_other_requests_flow_while_a_stream_is_open(self):
        gate = threading.Event()
        self.fake.route("GET", "/hold", Response(sse=["x", gate, "y"]))
        try:
            with RawConnection(self.port, timeout=10) as c:
                c.send_request("GET", "/bundleup-proxy/hold", [("X-Keyway-Token", self.token())])
                c.read_head(timeout=5)
                for i in range(20):
                    self.assertEqual(request(self.port, "GET", "/bundleup-proxy/side/%d" % i,
                                             [("X-Keyway-Token", self.token())], timeout=5).status, 200)
        finally:
            gate.set()
