"""test_tls.py: keyway to its upstreams over TLS, on the real path (libcurl), against fakes that serve TLS with
certificates made at run time (../fakes/tls_ca.py): forwarding (SSE, keep-alive, large bodies, timeouts),
certificates that must not verify (untrusted CA, wrong host name, expired) and what the client, the log and the
metrics then say, mutual TLS, a reload that changes the settings, BOSA and the cache over TLS, a real HTTP/2
upstream (nginx), and --check-config on `tls:`. Every test asserts on the response, on what the upstream
received, and where relevant on /_keyway/metrics. The forwarding and isolation suites also run over TLS
(test_forwarding.Tls*, test_isolation.Tls*)."""

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

from harness import (REPO, FakeUpstream, KeywayTestCase, RawConnection, Response, binary, build_request,
                     closed_port, concurrent_requests, request, sse_event, test_pki)

sys.path.insert(0, str(REPO / "tests" / "fakes"))

from test_bosa import BosaEnv, BosaTestBase  # noqa: E402
from test_cache import CacheTestBase  # noqa: E402


def _uid():
    return uuid.uuid4().hex[:10]


def metric(port, name, labels):
    """The value of one sample of /_keyway/metrics (0 when absent); labels as {"upstream": "x", ...}."""
    text = request(port, "GET", "/_keyway/metrics").text
    want = set('%s="%s"' % kv for kv in labels.items())
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{([^}]*)\})? (\S+)$", line)
        if m and m.group(1) == name and set(re.findall(r'[a-z_]+="[^"]*"', m.group(2) or "")) == want:
            return float(m.group(3))
    return 0.0


def tls_errors(port, upstream):
    return metric(port, "keyway_upstream_errors_total", {"upstream": upstream, "kind": "tls"})


def wait_until(predicate, timeout=3.0):
    """The fakes count a handshake on their own thread, sometimes just after keyway answered."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def provision_alpha(cls):
    """The smallest provisioning: team alpha, client app-alpha, the shared bundleup.api_key."""
    cls.secrets = {"bundleup": "bu-" + _uid()}
    cls.kw.add_team("alpha")
    cls.kw.set_secret("bundleup.api_key", cls.secrets["bundleup"])
    cls.tokens = {"app-alpha": cls.kw.add_client("app-alpha", "alpha")}


# ================================================================================================
# Forwarding over TLS: what the byte-exact suites (test_forwarding.Tls*) do not cover
# ================================================================================================

class TlsForwardingTest(KeywayTestCase):
    TLS = True
    LIMITS = {"max_body_bytes": 16 << 20}

    @classmethod
    def upstreams(cls):
        ups = super().upstreams()
        ups["slow"] = {"base_url": cls.fake.url, "protocol": "bundleup", "timeout": "1s"}
        return ups

    def test_sse_is_streamed_unbuffered(self):
        gate = threading.Event()
        self.addCleanup(gate.set)
        self.fake.route("GET", "/events", Response(sse=[sse_event("first", event_id=1), gate,
                                                        sse_event("second", event_id=2)]))
        with RawConnection(self.port, timeout=10) as c:
            c.send_request("GET", "/bundleup-proxy/events", [("X-Keyway-Token", self.token()),
                                                            ("Accept", "text/event-stream")])
            head = c.read_head()
            self.assertEqual(head.status, 200, head)
            self.assertIn("text/event-stream", head.header("Content-Type", ""))
            # The first event arrives while the upstream still holds the stream open.
            self.assertIn(b"data: first", c.read_stream_until(b"data: first\n\n", timeout=5))
            self.assertNotIn(b"second", bytes(c.stream_body))
            gate.set()
            self.assertIn(b"data: second", c.read_stream_until(b"data: second\n\n", timeout=5))
        r = self.only_request()
        self.assertEqual((r.method, r.target), ("GET", "/events"))
        self.assertEqual(r.tls["alpn"], "http/1.1")

    def test_keep_alive_reuses_few_connections(self):
        conns, handshakes = self.fake.connections_accepted, self.fake.tls_handshakes_ok
        reused = metric(self.port, "keyway_upstream_connections_reused_total", {"upstream": "bundleup-proxy"})
        for i in range(50):
            resp = self.call("GET", "/bundleup-proxy/ka/%d" % i)
            self.assertEqual(resp.status, 200, resp)
        reqs = self.fake.wait_for_requests(50)
        self.assertEqual([r.target for r in reqs], ["/ka/%d" % i for i in range(50)])
        # One connection per upstream I/O thread at most (server.threads, 2 by default), each with
        # one handshake: the other requests rode pooled TLS connections.
        self.assertLessEqual(self.fake.connections_accepted - conns, 2)
        self.assertLessEqual(self.fake.tls_handshakes_ok - handshakes, 2)
        self.assertLessEqual(len({r.conn_id for r in reqs}), 2)
        self.assertGreaterEqual(
            metric(self.port, "keyway_upstream_connections_reused_total", {"upstream": "bundleup-proxy"}) - reused, 48)

    def test_large_bodies_both_ways(self):
        up = os.urandom(8 << 20)
        down = os.urandom(8 << 20) + b"end"
        self.fake.route("PUT", "/blob", Response(headers=[("Content-Type", "application/octet-stream")], body=down))
        resp = self.call("PUT", "/bundleup-proxy/blob", [("Content-Type", "application/octet-stream")], up,
                         timeout=60)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(len(resp.body), len(down))
        self.assertTrue(resp.body == down, "the 8 MiB response differs")
        r = self.only_request()
        self.assertEqual(len(r.body), len(up))
        self.assertTrue(r.body == up, "the 8 MiB request body differs")
        self.assertIsNotNone(r.tls)

    def test_slow_tls_upstream_is_504(self):
        before = metric(self.port, "keyway_upstream_errors_total", {"upstream": "slow", "kind": "timeout"})
        self.fake.route("GET", "/slow", Response(delay=3.0, body=b"late"))
        t0 = time.monotonic()
        resp = self.call("GET", "/slow/slow", timeout=15)
        took = time.monotonic() - t0
        self.assertKeywayError(resp, 504, "upstream_timeout", "Gateway Timeout")
        self.assertLess(took, 2.5, "the 1s timeout was not applied (%.1fs)" % took)
        self.assertEqual(self.only_request().target, "/slow")
        self.assertEqual(metric(self.port, "keyway_upstream_errors_total", {"upstream": "slow", "kind": "timeout"}),
                         before + 1)


# ================================================================================================
# Certificates that must not verify
# ================================================================================================

class TlsVerificationTest(KeywayTestCase):
    """One fake per bad certificate, each behind its own upstream that trusts the test CA; `v-system`
    points at the good fake without `tls:` (the system's CAs, which do not include the test CA)."""

    TLS = True
    BAD = {
        # upstream: (certificate the fake serves, the reason keyway must give)
        "v-untrusted": ("other-ca", "the certificate is not signed by a trusted CA (check tls.ca_file)"),
        "v-wrong-host": ("wrong-host", "the certificate does not match the host name of base_url"),
        "v-cn-only": ("cn-only", "the certificate does not match the host name of base_url"),
        "v-expired": ("expired", "the certificate has expired"),
    }
    # libcurl checks the host name once the handshake is done, so the fake sees those complete
    # (then the connection closes without a request); a chain that does not verify fails in it.
    HOST_CHECKS = ("v-wrong-host", "v-cn-only")
    bad_fakes = {}

    @classmethod
    def upstreams(cls):
        ups = super().upstreams()
        pki = test_pki()
        for name, (cert, _) in cls.BAD.items():
            fake = FakeUpstream(ssl_context=pki.server_context(cert)).start()
            cls.addClassCleanup(fake.stop)
            cls.bad_fakes[name] = fake
            ups[name] = {"base_url": fake.url, "protocol": "bundleup"}
        ups["v-system"] = {"base_url": cls.fake.url, "protocol": "bundleup", "tls": {}}
        return ups

    def assertVerificationRefused(self, upstream, fake, reason):
        pki = test_pki()
        ok, failed = fake.tls_handshakes_ok, fake.tls_handshakes_failed
        before = tls_errors(self.port, upstream)
        path = "/v1/%s" % _uid()
        resp = self.call("GET", "/%s%s" % (upstream, path))
        doc = self.assertKeywayError(resp, 502, "upstream_unreachable", "Bad Gateway")
        message = doc["error"]["message"]
        self.assertIn("TLS certificate verification failed", message)
        self.assertIn("'%s'" % upstream, message)
        self.assertIn(reason, message)
        self.assertNotIn(pki.tag, resp.text, "certificate contents (subject) reached the client")
        # One handshake, no request.
        self.assertTrue(wait_until(lambda: fake.tls_handshakes_ok + fake.tls_handshakes_failed == ok + failed + 1))
        if upstream not in self.HOST_CHECKS:
            self.assertEqual(fake.tls_handshakes_ok, ok, "keywayd completed a handshake with a bad certificate")
        self.assertEqual(fake.requests, [])
        self.assertEqual(tls_errors(self.port, upstream), before + 1)
        access = self.kw.wait_for_record(lambda r: r.get("msg") == "access" and r.get("path") == path)
        self.assertIsNotNone(access, "no access line")
        self.assertEqual((access.get("status"), access.get("error")), (502, "upstream_unreachable"), access)
        self.assertEqual(access.get("cause"), message, "the access line does not say why")
        return message

    def warn_lines(self, upstream):
        return [r for r in self.kw.records()
                if r.get("level") == "warn" and "upstream '%s'" % upstream in r.get("msg", "")]

    def test_each_bad_certificate_is_a_502_saying_why(self):
        for upstream, (cert, reason) in self.BAD.items():
            with self.subTest(upstream=upstream, cert=cert):
                self.assertVerificationRefused(upstream, self.bad_fakes[upstream], reason)
                line = self.kw.wait_for_record(
                    lambda r: r.get("level") == "warn" and "upstream '%s'" % upstream in r.get("msg", ""))
                self.assertIsNotNone(line, "no warn line for %s" % upstream)
                self.assertIn("TLS certificate verification failed: " + reason, line["msg"])
        # Nothing of any certificate (CN, organisation) in anything keywayd wrote.
        self.assertNotIn(test_pki().tag, self.kw.stderr_text())

    def test_ca_file_is_what_trusts_the_test_ca(self):
        # Without tls.ca_file the system's CAs apply, and they do not know the test CA...
        self.assertVerificationRefused("v-system", self.fake,
                                       "the certificate is not signed by a trusted CA (check tls.ca_file)")
        # ...while the same fake behind an upstream with the test CA answers.
        resp = self.call("GET", "/bundleup-proxy/trusted")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().target, "/trusted")

    def test_warn_line_is_rate_limited_and_every_failure_counted(self):
        before = tls_errors(self.port, "v-expired")
        fake = self.bad_fakes["v-expired"]
        for _ in range(3):
            self.assertKeywayError(self.call("GET", "/v-expired/again"), 502, "upstream_unreachable")
        self.assertEqual(tls_errors(self.port, "v-expired"), before + 3)
        self.assertEqual(fake.requests, [])
        # The sink writes one line per upstream and reason per 10 s: one line here, however many
        # failures (the first test may already have written it).
        self.assertEqual(len(self.warn_lines("v-expired")), 1, self.warn_lines("v-expired"))


# ================================================================================================
# Mutual TLS
# ================================================================================================

class MutualTlsTest(KeywayTestCase):
    """The fake requires a client certificate of the test CA (TLS 1.3, so it refuses after the
    handshake); `tls12` is the same with TLS 1.2 (it refuses during the handshake)."""

    TLS = True
    tls12 = None

    @classmethod
    def make_fake(cls, **kw):
        return super().make_fake(ssl_context=test_pki().server_context(require_client_cert=True))

    @classmethod
    def upstreams(cls):
        pki = test_pki()
        ctx = pki.server_context(require_client_cert=True)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        cls.tls12 = FakeUpstream(ssl_context=ctx).start()
        cls.addClassCleanup(cls.tls12.stop)
        client = {"ca_file": pki.ca_file, "client_cert": pki.path("client.pem"), "client_key": pki.path("client.key")}
        f = cls.fake.url
        return {
            "bundleup-proxy": {"base_url": f, "tls": client},
            "m-combined": {"base_url": f, "protocol": "bundleup",
                           "tls": {"ca_file": pki.ca_file, "client_cert": pki.path("client-combined.pem"),
                                   "client_key": pki.path("client-combined.pem")}},
            "m-none": {"base_url": f, "protocol": "bundleup"},  # with_tls: ca_file only
            "m-other": {"base_url": f, "protocol": "bundleup",
                        "tls": {"ca_file": pki.ca_file, "client_cert": pki.path("other-client.pem"),
                                "client_key": pki.path("other-client.key")}},
            "m12-none": {"base_url": cls.tls12.url, "protocol": "bundleup"},
            "m12-other": {"base_url": cls.tls12.url, "protocol": "bundleup",
                          "tls": {"ca_file": pki.ca_file, "client_cert": pki.path("other-client.pem"),
                                  "client_key": pki.path("other-client.key")}},
            "m12-client": {"base_url": cls.tls12.url, "protocol": "bundleup", "tls": dict(client)},
        }

    provision = classmethod(provision_alpha)

    def test_configured_client_certificate_is_presented(self):
        pki = test_pki()
        for upstream, fake in (("bundleup-proxy", self.fake), ("m-combined", self.fake), ("m12-client", self.tls12)):
            with self.subTest(upstream=upstream):
                fake.reset()
                resp = self.call("GET", "/%s/whoami" % upstream)
                self.assertEqual(resp.status, 200, resp)
                r = fake.wait_for_requests(1)[0]
                self.assertEqual(r.target, "/whoami")
                self.assertEqual(r.tls["client_subject"], pki.subject("client"))
                self.assertEqual(r.header("Authorization"), "Bearer " + self.secrets["bundleup"])

    def test_missing_or_untrusted_client_certificate_is_502(self):
        for upstream, fake in (("m-none", self.fake), ("m-other", self.fake), ("m12-none", self.tls12),
                               ("m12-other", self.tls12)):
            with self.subTest(upstream=upstream):
                fake.reset()
                failed = fake.tls_handshakes_failed
                before = tls_errors(self.port, upstream)
                resp = self.call("GET", "/%s/whoami" % upstream)
                doc = self.assertKeywayError(resp, 502, "upstream_unreachable", "Bad Gateway")
                self.assertIn("TLS", doc["error"]["message"])
                self.assertNotIn(test_pki().tag, resp.text)
                self.assertEqual(fake.requests, [])
                self.assertTrue(wait_until(lambda: fake.tls_handshakes_failed == failed + 1), fake.tls_failures)
                self.assertEqual(tls_errors(self.port, upstream), before + 1)
        self.fake.reset()  # tearDown checks what this fake got; nothing did


# ================================================================================================
# Reload: new settings for new requests, never a connection made under the old ones
# ================================================================================================

class TlsReloadTest(KeywayTestCase):
    TLS = True
    provision = classmethod(provision_alpha)

    @classmethod
    def upstreams(cls):
        cls.ca_copy = os.path.join(tempfile.mkdtemp(prefix="keyway-it-ca-"), "ca.pem")
        cls.addClassCleanup(shutil.rmtree, os.path.dirname(cls.ca_copy), True)
        shutil.copy(test_pki().ca_file, cls.ca_copy)
        return {"bundleup-proxy": {"base_url": cls.fake.url, "tls": {"ca_file": test_pki().ca_file}}}

    def reload_with_ca(self, ca_file):
        self.kw.config["upstreams"]["bundleup-proxy"]["tls"]["ca_file"] = ca_file
        self.kw.write_config()
        done = len([r for r in self.kw.records() if r.get("msg") == "configuration reloaded"])
        self.kw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len([r for r in self.kw.records() if r.get("msg") == "configuration reloaded"]) <= done:
            self.assertLess(time.monotonic(), deadline, "no reload:\n" + self.kw.stderr_tail())
            time.sleep(0.02)

    def get(self, expect):
        resp = self.call("GET", "/bundleup-proxy/r/" + _uid())
        if expect == 200:
            self.assertEqual(resp.status, 200, resp)
        else:
            doc = self.assertKeywayError(resp, 502, "upstream_unreachable")
            self.assertIn("not signed by a trusted CA", doc["error"]["message"])
        return resp

    def test_changed_ca_file_applies_to_new_requests(self):
        pki = test_pki()
        self.get(200)  # leaves a pooled, verified connection
        self.assertEqual(len(self.fake.requests), 1)
        # Another CA: the pooled connection was verified under other settings and must not be used.
        self.reload_with_ca(pki.other_ca_file)
        self.get(502)
        self.assertEqual(len(self.fake.requests), 1, "a request rode a connection made under the old CA")
        self.reload_with_ca(pki.ca_file)
        self.get(200)
        self.assertEqual(len(self.fake.requests), 2)

    def test_ca_file_rewritten_in_place_is_read_again_after_reload(self):
        pki = test_pki()
        shutil.copy(pki.other_ca_file, self.ca_copy)
        self.reload_with_ca(self.ca_copy)
        time.sleep(1.1)  # long enough for libcurl to cache the CA store it reads next
        self.get(502)
        self.get(502)
        shutil.copy(pki.ca_file, self.ca_copy)  # same path, the right CA now
        self.reload_with_ca(self.ca_copy)
        time.sleep(1.1)
        self.get(200)
        self.assertEqual(len(self.fake.requests), 1)
        self.reload_with_ca(pki.ca_file)


# ================================================================================================
# BOSA and the cache over TLS
# ================================================================================================

class TlsBosaTest(BosaTestBase):
    """Every BOSA path once over TLS: discovery, a validated action with a minted user token, 422
    with nothing sent, users/me, integrations, the re-mint on 401, a cached list, keywayctl's
    schema refresh (its own libcurl handle) with the trusted and with an untrusted CA."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.shared = BosaEnv(users=("alice", "carol", "revoked"), tls=True)
        cls.addClassCleanup(cls.shared.close)
        # The first discovery request, before any test: keywayd fetches the document then.
        cls.first_discovery = request(cls.shared.kw.main_port, "GET", "/bosa/connectors", [("Accept", "*/*")])
        cls.first_fetches = cls.shared.fake.discovery_requests()

    def setUp(self):
        self.use_env(self.shared)
        self.fake.clear_log()

    def tearDown(self):
        for r in self.fake.requests:
            self.assertIsNotNone(r.tls, "a request reached BOSA without TLS: %r" % r)

    def test_discovery_action_and_validation(self):
        resp = self.first_discovery
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body, self.fake.document_bytes())
        self.assertEqual([r.target for r in self.first_fetches], ["/connectors"])
        self.assertIsNotNone(self.first_fetches[0].tls)
        self.assertEqual(self.first_fetches[0].header_all("X-API-Key"), [])

        # carol acts in this test only: her token is minted here, over TLS.
        body, status = self.sdk().execute("github", "create_issue", {"owner": "acme", "repo": "r" + _uid(),
                                                                    "title": "over tls"}, token="kwu_carol")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["data"]["user"], "carol")
        self.assertEqual(len(self.fake.mint_requests("carol")), 1)
        act = self.fake.action_requests("create_issue")[-1]
        self.assertInjected(act, user="carol")

        self.fake.clear_log()
        self.assertInvalid(self.post("github", "create_issue", {"owner": "acme", "repo": "r", "title": ""},
                                     user="carol"), ["/title"])
        self.assertNothingSent()

    def test_users_me_integrations_and_remint_on_401(self):
        sdk = self.sdk()
        self.assertEqual(sdk.get_user_info("kwu_alice")["identifier"], "alice")
        self.assertFalse(sdk.user_has_integration("github", "kwu_alice"))
        sdk.initiate_plugin_configuration("github", "kwu_alice", {"identifier": "alice-gh", "url": "x"})
        self.assertTrue(sdk.user_has_integration("github", "kwu_alice"))
        for r in [r for r in self.fake.requests if r.path != "/auth/tokens"]:
            self.assertInjected(r, user="alice")

        call = {"owner": "acme", "repo": "r", "title": "t"}
        self.assertEqual(sdk.execute("github", "create_issue", call, token="kwu_revoked")[1], 200)
        self.fake.revoke_tokens("revoked")
        self.fake.clear_log()
        body, status = sdk.execute("github", "create_issue", call, token="kwu_revoked")
        self.assertEqual(status, 200, body)
        old, new = self.fake.tokens_of("revoked")
        self.assertEqual([(r.path, r.header("Authorization")) for r in self.fake.requests],
                         [("/connectors/github/create_issue", "Bearer " + old), ("/auth/tokens", None),
                          ("/connectors/github/create_issue", "Bearer " + new)])

    def test_cached_list_action(self):
        params = {"owner": "acme", "repo": "r" + _uid()}
        first = self.post("github", "list_pull_requests", params, user="alice")
        self.assertEqual((first.status, first.header("X-Keyway-Cache")), (200, "MISS"), first)
        second = self.post("github", "list_pull_requests", params, user="alice")
        self.assertEqual((second.status, second.header("X-Keyway-Cache")), (200, "HIT"), second)
        self.assertEqual(first.body, second.body)
        self.assertEqual(len(self.fake.action_requests("list_pull_requests")), 1)

    def test_keywayctl_schema_refresh_trusts_only_the_configured_ca(self):
        cp = self.kw.ctl("schemas", "refresh")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual([r.target for r in self.fake.discovery_requests()], ["/connectors"])

        # The same state with the other CA: keywayctl refuses the certificate, says why, stores nothing.
        self.fake.clear_log()
        text = self.kw.config_path.read_text().replace(test_pki().ca_file, test_pki().other_ca_file)
        other = self.kw.dir / "other-ca.yaml"
        other.write_text(text)
        cp = self.kw.ctl("--config", str(other), "schemas", "refresh", check=False, config=False)
        self.assertEqual(cp.returncode, 2, cp.stdout + cp.stderr)
        self.assertIn("TLS certificate verification failed: the certificate is not signed by a trusted CA",
                      cp.stderr)
        self.assertNotIn(test_pki().tag, cp.stdout + cp.stderr)
        self.assertEqual(self.fake.requests, [])


class TlsCacheTest(CacheTestBase):
    TLS = True
    RULES = [{"upstream": "bundleup-api", "path": "/v1/swr/**", "ttl": "1s",
              "stale_while_revalidate": "30s", "stale_if_error": "0s"}]

    def test_miss_hit_stale_and_invalidation(self):
        p = "/v1/swr/%s" % _uid()
        first = self.assertCache(self.get("/bundleup-api" + p), "MISS")
        self.assertEqual(self.assertCache(self.get("/bundleup-api" + p), "HIT").body, first.body)
        self.assertEqual(self.upstream_count(p), 1)
        time.sleep(1.2)
        self.assertCache(self.get("/bundleup-api" + p), "STALE")
        self.fake.wait_for_requests(2)  # the background refresh...
        self.assertTrue(wait_until(lambda: self.get("/bundleup-api" + p).header("X-Keyway-Cache") == "HIT"))
        # ...stored: fresh again. (The store writes on its own thread, so a read just after the
        # refresh landed may still find the stale entry and refresh once more.)
        refreshed = self.upstream_count(p)
        self.assertIn(refreshed, (2, 3))
        # A successful write drops the entry: the next read goes upstream again.
        self.assertEqual(self.call("POST", "/bundleup-api" + p, [("Content-Type", "application/json")], b"{}").status,
                         200)
        self.assertCache(self.get("/bundleup-api" + p), "MISS")
        self.assertEqual(self.upstream_count(p), refreshed + 2)
        hits = metric(self.port, "keyway_cache_hits_total", {"upstream": "bundleup-api"})
        self.assertGreaterEqual(hits, 1)


# ================================================================================================
# A real HTTP/2 upstream: Debian's nginx, started by the test
# ================================================================================================

@unittest.skipUnless(shutil.which("nginx"), "nginx is not installed (scripts/test installs it)")
class Http2NginxTest(KeywayTestCase):
    """nginx answers `$http2 $request_uri $http_authorization` over TLS with HTTP/2 (ALPN h2) and
    logs each request's connection serial number: keyway must speak HTTP/2 to it and multiplex."""

    TLS = True
    nginx = None
    provision = classmethod(provision_alpha)

    @classmethod
    def setUpClass(cls):
        pki = test_pki()
        cls.ndir = tempfile.mkdtemp(prefix="keyway-it-nginx-")
        cls.addClassCleanup(shutil.rmtree, cls.ndir, True)
        cls.nport = closed_port()
        conf = os.path.join(cls.ndir, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""
daemon off;
master_process off;
pid %(d)s/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  client_body_temp_path %(d)s/body; proxy_temp_path %(d)s/proxy; fastcgi_temp_path %(d)s/fastcgi;
  uwsgi_temp_path %(d)s/uwsgi; scgi_temp_path %(d)s/scgi;
  log_format conns '$connection $connection_requests $http2 $request_uri';
  access_log %(d)s/access.log conns;
  server {
    listen 127.0.0.1:%(port)d ssl http2;
    ssl_certificate %(cert)s;
    ssl_certificate_key %(key)s;
    location / { default_type text/plain; return 200 "$http2 $request_uri $http_authorization"; }
  }
}
""" % {"d": cls.ndir, "port": cls.nport, "cert": pki.path("server.pem"), "key": pki.path("server.key")})
        cls.nginx = subprocess.Popen(["nginx", "-p", cls.ndir, "-c", conf, "-e", "stderr"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cls.addClassCleanup(cls.stop_nginx)
        deadline = time.monotonic() + 10
        while True:
            try:
                request(cls.nport, "GET", "/ping", ssl_context=pki.client_context(), timeout=2)
                break
            except OSError:
                if cls.nginx.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: %s" % cls.nginx.stderr.read().decode(errors="replace"))
                time.sleep(0.05)
        super().setUpClass()

    @classmethod
    def stop_nginx(cls):
        if cls.nginx and cls.nginx.poll() is None:
            cls.nginx.terminate()
            try:
                cls.nginx.wait(10)
            except subprocess.TimeoutExpired:
                cls.nginx.kill()
                cls.nginx.wait(5)

    @classmethod
    def upstreams(cls):
        # bundleup-unify is used only by the cold-burst test, so its pool starts empty there.
        base = "https://127.0.0.1:%d" % cls.nport
        return {"bundleup-proxy": {"base_url": base}, "bundleup-unify": {"base_url": base}}

    @classmethod
    def extra_config(cls):
        return {"server": {"threads": 2}}

    def access_log(self, marker="/h2/"):
        with open(os.path.join(self.ndir, "access.log")) as f:
            return [line.split(" ", 3) for line in f.read().splitlines() if marker in line]

    def test_http2_and_multiplexing(self):
        resp = self.call("GET", "/bundleup-proxy/h2/a%2Fb/?z=1&a=2")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.text, "h2 /h2/a%%2Fb/?z=1&a=2 Bearer %s" % self.secrets["bundleup"])

        new_before = metric(self.port, "keyway_upstream_connections_new_total", {"upstream": "bundleup-proxy"})
        raw = [build_request("GET", "/bundleup-proxy/h2/c/%d" % i,
                             [("X-Keyway-Token", self.token()), ("Host", "127.0.0.1:%d" % self.port)])
               for i in range(40)]
        results = concurrent_requests(self.port, raw, timeout=30)
        for i, r in enumerate(results):
            self.assertNotIsInstance(r, Exception, r)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.text.split(" ")[:2], ["h2", "/h2/c/%d" % i])
        log = self.access_log()
        self.assertEqual(len(log), 41, log)
        self.assertEqual({entry[2] for entry in log}, {"h2"})
        # 41 requests, 40 of them at once, over at most one connection per upstream I/O thread.
        self.assertLessEqual(len({entry[0] for entry in log}), 2, log)
        self.assertLessEqual(
            metric(self.port, "keyway_upstream_connections_new_total", {"upstream": "bundleup-proxy"}) - new_before, 2)

    def test_cold_burst_keeps_few_connections(self):
        # 300 clients at once on an upstream keyway has not talked to yet: until the first TLS
        # handshake says (ALPN) that the upstream multiplexes, every request could open its own
        # connection. keyway opens at most 8 per upstream I/O thread (2 here) and the rest share
        # their streams.
        raw = [build_request("GET", "/bundleup-unify/cold/%d" % i,
                             [("X-Keyway-Token", self.token()), ("Host", "127.0.0.1:%d" % self.port)])
               for i in range(300)]
        results = concurrent_requests(self.port, raw, timeout=60)
        for i, r in enumerate(results):
            self.assertNotIsInstance(r, Exception, r)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.text.split(" ")[:2], ["h2", "/cold/%d" % i])
        log = self.access_log("/cold/")
        self.assertEqual(len(log), 300)
        self.assertEqual({entry[2] for entry in log}, {"h2"})
        connections = {entry[0] for entry in log}
        self.assertLessEqual(len(connections), 16, sorted(connections))
        labels = {"upstream": "bundleup-unify"}
        self.assertLessEqual(metric(self.port, "keyway_upstream_connections_new_total", labels), 16)
        peak = metric(self.port, "keyway_upstream_pool_connections_peak", labels)
        self.assertGreaterEqual(peak, 1)
        self.assertLessEqual(peak, 16)


# ================================================================================================
# --check-config on tls:
# ================================================================================================

class TlsCheckConfigTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="keyway-it-tlscfg-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def check(self, tls_lines, base_url="https://api.example"):
        path = os.path.join(self.dir, "keyway.yaml")
        with open(path, "w") as f:
            f.write("listen: 127.0.0.1:0\nstate_dir: %s/state\nupstreams:\n  api:\n    base_url: %s\n    tls:\n%s"
                    % (self.dir, base_url, "".join("      %s\n" % line for line in tls_lines)))
        return subprocess.run([binary("keywayd"), "--config", path, "--check-config"], capture_output=True, text=True,
                              timeout=30)

    def test_good_and_bad_tls_settings(self):
        pki = test_pki()
        with open(pki.path("client.key")) as f:
            key_text = f.read()
        key_body = key_text.splitlines()[1]  # a line of the key's base64
        good = ["ca_file: %s" % pki.ca_file, "client_cert: %s" % pki.path("client.pem"),
                "client_key: %s" % pki.path("client.key")]
        cp = self.check(good)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        cases = [
            (["ca_file: %s/nope.pem" % self.dir], "upstreams.api.tls.ca_file", ":7:", "No such file"),
            (["client_cert: %s" % pki.path("client.pem")], "upstreams.api.tls.client_key", ":6:", "required"),
            (["client_cert: %s" % pki.path("client.pem"), "client_key: %s" % pki.path("client.pem")],
             "upstreams.api.tls.client_key", ":8:", "no PEM private key"),
            (["ca_file: %s" % pki.path("client.key")], "upstreams.api.tls.ca_file", ":7:", "no PEM certificate"),
            (["ca_flie: %s" % pki.ca_file], "upstreams.api.tls.ca_flie", ":7:", "unknown key"),
            (["ca_file: [a, b]"], "upstreams.api.tls.ca_file", ":7:", "got a list"),
            (good, "upstreams.api.tls", ":6:", "https://"),
        ]
        for lines, key, line, what in cases:
            with self.subTest(key=key, what=what):
                cp = self.check(lines, base_url="http://127.0.0.1:9" if what == "https://" else "https://api.example")
                self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
                self.assertIn(key + ":", cp.stderr)
                self.assertIn(line, cp.stderr)
                self.assertIn(what, cp.stderr)
                self.assertNotIn(key_body, cp.stdout + cp.stderr)


if __name__ == "__main__":
    unittest.main()
