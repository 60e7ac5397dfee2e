"""test_logs.py: what keywayd's log tells an operator (docs/operations.md, "Logs"). The access line names who
(client, team), with what (the injected credential's name and scope) and, for every error keyway answers
itself, why: the cause the client was told, for refusals before routing, 401, 403, 413, 502 (refused,
reset, TLS) and 504 alike. `log.level: debug` adds per-request lines numbered like their access line, and
nothing at info. No secret or token appears in any of it: each scan has a positive control (the value is
where it belongs, in what the fake upstream received). BOSA users on the access line and the mint-failure
warn line are in test_bosa.py; the 408 access line in test_hostile.py."""

import signal
import time
import uuid

from harness import FakeUpstream, KeywayTestCase, RawConnection, Response, closed_port, request, test_pki

LIMIT = 65536  # KeywayTestCase.LIMITS max_body_bytes


def _uid():
    return uuid.uuid4().hex[:12]


class LogTestBase(KeywayTestCase):

    def access_for(self, path, count=1, timeout=5.0):
        """The access records whose path is `path` (the rest after the mount), once `count` exist."""
        deadline = time.monotonic() + timeout
        while True:
            recs = [r for r in self.kw.access_records() if r.get("path") == path]
            if len(recs) >= count or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)

    def one_access(self, path):
        recs = self.access_for(path)
        self.assertEqual(len(recs), 1, "expected one access line for %s: %r" % (path, recs))
        return recs[0]

    def assertNoSecretInLog(self, extra=()):
        """No stored secret, no client token (nor `extra`) in anything keywayd wrote; the positive
        control (the secret is really known to the test) is the caller's."""
        log = self.kw.stderr_text() + "\n".join(self.kw.lines("stdout"))
        self.assertIn('"msg":"access"', log, "the log scanned is not keywayd's")
        for name, value in self.secrets.items():
            self.assertNotIn(value, log, "secret %s in keywayd's log" % name)
        for client, token in self.tokens.items():
            self.assertNotIn(token, log, "the token of %s in keywayd's log" % client)
        for value in extra:
            self.assertNotIn(value, log)


class AccessLineTest(LogTestBase):
    """Every status has its access line, naming the client and team keyway knew and why it refused."""

    expired_fake = None

    @classmethod
    def upstreams(cls):
        ups = super().upstreams()
        ups["dead"] = {"base_url": "http://127.0.0.1:%d" % closed_port(), "protocol": "bundleup",
                       "connect_timeout": "2s"}
        ups["slow"] = {"base_url": cls.fake.url, "protocol": "bundleup", "timeout": "1s"}
        pki = test_pki()
        cls.expired_fake = FakeUpstream(ssl_context=pki.server_context("expired")).start()
        cls.addClassCleanup(cls.expired_fake.stop)
        ups["expired"] = {"base_url": cls.expired_fake.url, "protocol": "bundleup", "tls": {"ca_file": pki.ca_file}}
        return ups

    def assertCauseIsWhatTheClientWasTold(self, resp, rec):
        self.assertEqual(rec.get("cause"), resp.json()["error"]["message"], rec)

    def test_success_names_client_team_and_credential(self):
        path = "/v1/ok/" + _uid()
        self.assertEqual(self.call("GET", "/bundleup-proxy" + path).status, 200)
        rec = self.one_access(path)
        self.assertEqual((rec["client"], rec["team"], rec["upstream"], rec["status"]),
                         ("app-alpha", "alpha", "bundleup-proxy", 200), rec)
        self.assertEqual((rec.get("credential"), rec.get("scope")), ("bundleup.api_key", "shared"), rec)
        for absent in ("error", "cause", "user", "user_token", "req"):
            self.assertNotIn(absent, rec, "a 200 at info has no %s: %r" % (absent, rec))
        path = "/v1/ok/" + _uid()
        self.assertEqual(self.call("GET", "/bundleup-proxy" + path, client="app-beta").status, 200)
        rec = self.one_access(path)
        self.assertEqual((rec["client"], rec["team"], rec.get("credential"), rec.get("scope")),
                         ("app-beta", "beta", "bundleup.api_key", "team:beta"), rec)

    def test_403_for_an_ungranted_upstream_names_client_and_team(self):
        path = "/v1/denied/" + _uid()
        resp = self.call("GET", "/bundleup-proxy" + path, client="app-iq")
        self.assertKeywayError(resp, 403, "forbidden")
        rec = self.one_access(path)
        self.assertEqual((rec["client"], rec["team"], rec["status"], rec.get("error")),
                         ("app-iq", "iqonly", 403, "forbidden"), rec)
        self.assertIn("team 'iqonly' has no access to upstream 'bundleup-proxy'", rec.get("cause", ""))
        self.assertCauseIsWhatTheClientWasTold(resp, rec)
        self.assertNotForwarded()

    def test_401_says_which_refusal(self):
        no_token = "/v1/anon/" + _uid()
        bogus = "kw_" + "B" * 43
        unknown = "/v1/unknown/" + _uid()
        r1 = request(self.port, "GET", "/bundleup-proxy" + no_token)
        r2 = request(self.port, "GET", "/bundleup-proxy" + unknown, [("X-Keyway-Token", bogus)])
        for resp, path, words in ((r1, no_token, "a keyway client token is required"),
                                  (r2, unknown, "unknown or revoked")):
            with self.subTest(path=path):
                self.assertKeywayError(resp, 401, "unauthorized")
                rec = self.one_access(path)
                self.assertEqual((rec["client"], rec["team"], rec.get("error")), ("-", "-", "unauthorized"), rec)
                self.assertIn(words, rec.get("cause", ""))
                self.assertCauseIsWhatTheClientWasTold(resp, rec)
        self.assertNoSecretInLog(extra=[bogus])

    def test_413_has_an_access_line_naming_the_client(self):
        path = "/v1/upload/" + _uid()
        with RawConnection(self.port) as c:
            c.send_request("POST", "/bundleup-proxy" + path,
                           [("X-Keyway-Token", self.token()), ("Content-Length", str(LIMIT + 1))])
            resp = c.read_response()
        self.assertKeywayError(resp, 413, "payload_too_large")
        rec = self.one_access(path)
        self.assertEqual((rec["client"], rec["team"], rec["upstream"], rec["method"], rec["status"], rec.get("error")),
                         ("app-alpha", "alpha", "bundleup-proxy", "POST", 413, "payload_too_large"), rec)
        self.assertCauseIsWhatTheClientWasTold(resp, rec)
        self.assertNotForwarded()

    def test_malformed_request_has_an_access_line(self):
        mark = len(self.kw.access_records())
        with RawConnection(self.port) as c:
            c.send(b"GET /bundleup-proxy/x HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
            resp = c.read_response()
        self.assertKeywayError(resp, 400, "bad_request")
        # Only lines written after the mark: another test of this class logged a 400 too.
        deadline = time.monotonic() + 5
        while True:
            recs = [r for r in self.kw.access_records()[mark:] if r.get("status") == 400]
            if recs or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual((recs[0]["client"], recs[0]["method"], recs[0]["path"]), ("-", "-", "-"), recs[0])
        self.assertCauseIsWhatTheClientWasTold(resp, recs[0])

    def test_502_refused_says_why(self):
        path = "/v1/refused/" + _uid()
        resp = self.call("GET", "/dead" + path)
        self.assertKeywayError(resp, 502, "upstream_unreachable")
        rec = self.one_access(path)
        self.assertEqual((rec["client"], rec["team"], rec.get("credential"), rec.get("error")),
                         ("app-alpha", "alpha", "bundleup.api_key", "upstream_unreachable"), rec)
        self.assertIn("could not be reached", rec.get("cause", ""))
        self.assertCauseIsWhatTheClientWasTold(resp, rec)

    def test_502_reset_says_why(self):
        # The upstream takes the request and closes without a word.
        self.fake.route("GET", "/v1/hangup*", Response(garbage=b""))
        path = "/v1/hangup/" + _uid()
        resp = self.call("GET", "/bundleup-proxy" + path)
        self.assertKeywayError(resp, 502, "upstream_unreachable")
        rec = self.one_access(path)
        self.assertEqual((rec["client"], rec["team"], rec.get("error")),
                         ("app-alpha", "alpha", "upstream_unreachable"), rec)
        self.assertIn("upstream connection failed", rec.get("cause", ""))
        self.assertCauseIsWhatTheClientWasTold(resp, rec)

    def test_502_tls_verification_says_why(self):
        path = "/v1/tls/" + _uid()
        resp = self.call("GET", "/expired" + path)
        self.assertKeywayError(resp, 502, "upstream_unreachable")
        rec = self.one_access(path)
        self.assertEqual((rec["client"], rec.get("error")), ("app-alpha", "upstream_unreachable"), rec)
        self.assertIn("TLS certificate verification failed", rec.get("cause", ""))
        self.assertIn("the certificate has expired", rec.get("cause", ""))
        self.assertCauseIsWhatTheClientWasTold(resp, rec)
        self.assertNotIn(test_pki().tag, self.kw.stderr_text(), "certificate contents in the log")

    def test_504_timeout_says_why(self):
        self.fake.route("GET", "/v1/stall*", Response(stall=True))
        path = "/v1/stall/" + _uid()
        resp = self.call("GET", "/slow" + path, timeout=20)
        self.assertKeywayError(resp, 504, "upstream_timeout")
        rec = self.one_access(path)
        self.assertEqual((rec["client"], rec["team"], rec.get("error")), ("app-alpha", "alpha", "upstream_timeout"), rec)
        self.assertIn("did not answer in time", rec.get("cause", ""))
        self.assertCauseIsWhatTheClientWasTold(resp, rec)

    def test_a_token_in_the_path_is_not_logged(self):
        token = self.token()
        resp = self.call("GET", "/bundleup-proxy/v1/" + token + "/x")
        self.assertKeywayError(resp, 400, "bad_request")
        resp = self.call("GET", "/nope/" + token)
        self.assertKeywayError(resp, 404, "not_found")
        self.assertTrue(self.kw.wait_for_record(lambda r: r.get("msg") == "access" and r.get("status") == 404, 5))
        self.assertNotForwarded()
        self.assertNoSecretInLog()


class DebugLogTest(LogTestBase):
    """`log.level: debug` (switched by a reload) adds per-request lines; info writes none."""

    def set_level(self, level):
        done = len([r for r in self.kw.records() if r.get("msg") == "configuration reloaded"])
        self.kw.config["log"]["level"] = level
        self.kw.write_config()
        self.kw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len([r for r in self.kw.records() if r.get("msg") == "configuration reloaded"]) <= done:
            self.assertLess(time.monotonic(), deadline, "no reload")
            time.sleep(0.05)

    def debug_lines(self, req):
        return [r for r in self.kw.records() if r.get("level") == "debug" and r.get("req") == req]

    def test_debug_details_at_debug_only_and_never_a_secret(self):
        # info (the harness's default): no debug line, no request number.
        path = "/v1/connections/" + _uid()
        self.assertEqual(self.call("GET", "/bundleup-api" + path).status, 200)
        rec = self.one_access(path)
        self.assertNotIn("req", rec)
        self.assertEqual([r for r in self.kw.records() if r.get("level") == "debug"], [])

        self.set_level("debug")
        try:
            self.fake.reset()
            path = "/v1/connections/" + _uid()
            first = self.call("GET", "/bundleup-api" + path)
            second = self.call("GET", "/bundleup-api" + path)
            self.assertEqual((first.header("X-Keyway-Cache"), second.header("X-Keyway-Cache")), ("MISS", "HIT"))
            miss, hit = self.access_for(path, 2)
            lines = self.debug_lines(miss["req"])
            by_msg = {r["msg"]: r for r in lines}
            for msg in ("route", "client authenticated", "credential injected", "cache key", "cache lookup",
                        "cache fill", "upstream exchange"):
                self.assertIn(msg, by_msg, "no %r debug line for the miss: %r" % (msg, lines))
            self.assertEqual((by_msg["route"]["upstream"], by_msg["route"]["path"]), ("bundleup-api", path))
            self.assertEqual((by_msg["client authenticated"]["client"], by_msg["client authenticated"]["team"]),
                             ("app-alpha", "alpha"))
            cred = by_msg["credential injected"]
            self.assertEqual((cred["credential"], cred["scope"], cred["header"]),
                             ("bundleup.api_key", "shared", "Authorization"))
            self.assertIn("credential bundleup.api_key@shared", by_msg["cache key"]["identity"])
            self.assertEqual(by_msg["cache lookup"]["result"], "miss")
            exchange = by_msg["upstream exchange"]
            self.assertEqual((exchange["status"], exchange["failure"]), (200, "none"))
            self.assertIn(exchange["connection"], ("new", "reused"))
            self.assertGreaterEqual(exchange["upstream_ms"], 0)
            hit_lines = {r["msg"]: r for r in self.debug_lines(hit["req"])}
            self.assertEqual(hit_lines["cache lookup"]["result"], "fresh")
            self.assertNotIn("upstream exchange", hit_lines)
            self.assertNotEqual(miss["req"], hit["req"])

            # A refusal: its lines and its access line share a number too.
            bogus = "kw_" + "Z" * 43
            denied = "/v1/denied/" + _uid()
            self.assertEqual(request(self.port, "GET", "/bundleup-proxy" + denied,
                                     [("Authorization", "Bearer " + bogus)]).status, 401)
            rec = self.one_access(denied)
            self.assertEqual([r["msg"] for r in self.debug_lines(rec["req"])], ["route"])

            # Positive control: the secret was injected (the fake saw it), yet the log never shows it.
            got = self.fake.wait_for_requests(1, 5)
            self.assertEqual(got[0].header("Authorization"), "Bearer " + self.secrets["bundleup"])
            self.assertNoSecretInLog(extra=[bogus])
        finally:
            self.set_level("info")
        # Back at info: requests write no debug line again.
        mark = len(self.kw.records())
        path = "/v1/connections/" + _uid()
        self.assertEqual(self.call("GET", "/bundleup-api" + path).status, 200)
        rec = self.one_access(path)
        self.assertNotIn("req", rec)
        self.assertEqual([r for r in self.kw.records()[mark:] if r.get("level") == "debug"], [])
