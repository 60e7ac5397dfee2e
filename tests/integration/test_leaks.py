"""test_leaks.py: no secret value and no kw_ token in any file keyway writes, its stderr, its metrics or
any response (docs/auth.md, docs/operations.md); and the access log carries one structured line per request."""

import base64
import os
import re
import secrets
import signal
import time
import uuid

from harness import KeywayTestCase, RawConnection, Response, request

TOKEN_RE = re.compile(rb"kw_[A-Za-z0-9_\-]{6,}")


def _scan_dir(root, needles):
    """{needle: [files containing it]} over every regular file under root, plus the bytes scanned."""
    found = {n: [] for n in needles}
    scanned = 0
    files = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            files += 1
            scanned += len(data)
            for n in needles:
                if n in data:
                    found[n].append(path)
    return found, files, scanned


def _encodings(value):
    """A secret must not be stored as itself, nor trivially encoded."""
    raw = value.encode("utf-8")
    return [raw, raw.hex().encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"=")]


class LeakTest(KeywayTestCase):

    @classmethod
    def provision(cls):
        kw = cls.kw
        tag = secrets.token_hex(8)
        cls.secrets = {
            "bundleup": "LEAKCANARY-bu-shared-" + tag,
            "bundleiq": "LEAKCANARY-iq-shared-" + tag,
            "bundleup@beta": "LEAKCANARY-bu-beta-" + tag,
        }
        kw.add_team("alpha")
        kw.add_team("beta")
        kw.add_team("iqonly", upstreams=["bundleiq"])
        kw.set_secret("bundleup.api_key", cls.secrets["bundleup"])
        kw.set_secret("bundleiq.api_key", cls.secrets["bundleiq"])
        kw.set_secret("bundleup.api_key", cls.secrets["bundleup@beta"], team="beta")
        cls.tokens = {
            "leaky-app": kw.add_client("leaky-app", "alpha"),
            "app-beta": kw.add_client("app-beta", "beta"),
            "app-iq": kw.add_client("app-iq", "iqonly"),
            "revoked-app": kw.add_client("revoked-app", "alpha"),
        }
        kw.revoke_client("revoked-app")

    def _traffic(self):
        """Every kind of request, successful or not; returns every response received."""
        out = []
        # Never the fake's echo here: it would hand the injected key back to the client by design.
        self.fake.route("*", "/*", Response.json({"ok": True}))
        self.fake.route("*", "/err", Response(500, body=b'{"error":"upstream broke"}'))
        self.fake.route("GET", "/v1/notes", Response.json({"notes": []}))
        tok = self.tokens
        main = self.port
        compat = self.kw.compat_ports["bundleup-proxy"]
        for client in ("leaky-app", "app-beta"):
            out.append(request(main, "GET", "/bundleup-proxy/fixed?x=1", [("X-Keyway-Token", tok[client])]))
            out.append(request(main, "POST", "/bundleup-proxy/fixed", [("Authorization", "Bearer " + tok[client]),
                                                                     ("Content-Type", "application/json")], b"{}"))
            out.append(request(compat, "GET", "/fixed", [("Authorization", "Bearer " + tok[client])]))
            out.append(request(main, "GET", "/bundleup-proxy/err", [("X-Keyway-Token", tok[client])]))
        out.append(request(main, "GET", "/bundleiq/v1/notes", [("X-Api-Key", tok["app-iq"])]))
        out.append(request(main, "GET", "/bundleiq/v1/notes", [("X-Api-Key", tok["app-iq"])]))  # cache hit, maybe
        out.append(request(main, "GET", "/bundleup-proxy/fixed", [("X-Keyway-Token", tok["app-iq"])]))  # 403
        out.append(request(main, "GET", "/bundleup-proxy/fixed", [("X-Keyway-Token", tok["revoked-app"])]))  # 401
        out.append(request(main, "GET", "/bundleup-proxy/fixed", [("X-Keyway-Token", self.bogus)]))  # 401
        out.append(request(main, "GET", "/bundleup-proxy/fixed", [("Authorization", "Bearer " + self.bogus)]))
        out.append(request(main, "GET", "/nope/x", [("X-Keyway-Token", tok["leaky-app"])]))  # 404
        out.append(request(main, "GET", "/bundleup-proxy/%2e%2e/x", [("X-Keyway-Token", tok["leaky-app"])]))  # 400
        with RawConnection(main) as c:  # 413
            c.send_request("POST", "/bundleup-proxy/fixed", [("X-Keyway-Token", tok["leaky-app"]),
                                                           ("Content-Length", str(10 * 1024 * 1024))])
            out.append(c.read_response())
        out.append(request(main, "GET", "/_keyway/health"))
        out.append(request(main, "GET", "/_keyway/ready"))
        return out

    def test_no_secret_or_token_anywhere(self):
        self.bogus = "kw_LEAKCANARY_unknown_" + secrets.token_hex(8)
        responses = self._traffic()
        self.assertTrue(any(r.status == 200 for r in responses), "no request succeeded: the scan would prove nothing")
        metrics = request(self.port, "GET", "/_keyway/metrics")
        self.assertEqual(metrics.status, 200)

        # Positive control: the access log names the client, so the log is really being scanned.
        rec = self.kw.wait_for_record(lambda r: r.get("msg") == "access" and r.get("client") == "leaky-app", 5)
        self.assertIsNotNone(rec, "no access line names client 'leaky-app'")

        # Stop keywayd so everything it buffers is on disk, then scan.
        code = self.kw.stop()
        self.assertEqual(code, 0, "keywayd did not exit 0 on SIGTERM")
        secret_needles = {}
        for name, value in self.secrets.items():
            for enc in _encodings(value):
                secret_needles[enc] = "secret %s" % name
        token_needles = {t.encode(): "token of %s" % c for c, t in self.tokens.items()}
        token_needles[self.bogus.encode()] = "unknown kw_ token sent by a client"
        needles = {**secret_needles, **token_needles}

        # Positive control for the file scan: a value that IS in a file is found.
        control = ("LEAKCONTROL-" + uuid.uuid4().hex).encode()
        control_path = self.kw.state_dir / "zz-scan-control.txt"
        control_path.write_bytes(b"prefix " + control + b" suffix")
        found, files, scanned = _scan_dir(str(self.kw.state_dir), list(needles) + [control])
        control_path.unlink()
        self.assertEqual(found[control], [str(control_path)], "the scanner does not find a planted value")
        self.assertGreaterEqual(files, 2, "nothing but the control file under the state dir")
        self.assertGreater(scanned, 4096)
        leaks = ["%s in %s" % (needles[n], paths) for n, paths in found.items() if paths and n != control]
        self.assertEqual(leaks, [], "plaintext secrets/tokens in files under the state dir")

        log = self.kw.stderr_text().encode("utf-8") + b"\n" + "\n".join(self.kw.lines("stdout")).encode()
        self.assertIn(b"leaky-app", log)
        self.assertEqual([needles[n] for n in needles if n in log], [], "secrets/tokens in keywayd's output")
        self.assertEqual(TOKEN_RE.findall(log), [], "kw_ token-like strings in keywayd's output")

        self.assertEqual([needles[n] for n in needles if n in metrics.body], [], "secrets/tokens in metrics")
        self.assertEqual(TOKEN_RE.findall(metrics.body), [])

        for resp in responses:
            blob = resp.body + repr(resp.headers).encode()
            self.assertEqual([needles[n] for n in needles if n in blob], [],
                             "secret/token in a response: %d %r" % (resp.status, resp.body[:200]))

        # Restart on the same state: everything still works from the encrypted store.
        self.kw.start()
        self.fake.reset()
        resp = request(self.port, "GET", "/bundleup-proxy/fixed", [("X-Keyway-Token", self.tokens["leaky-app"])])
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().header("Authorization"), "Bearer " + self.secrets["bundleup"])

    def test_keywayctl_output_never_shows_values(self):
        cp = self.kw.ctl("secret", "list")
        self.assertIn("bundleup.api_key", cp.stdout)
        self.assertIn("beta", cp.stdout)
        cp2 = self.kw.ctl("client", "list")
        self.assertIn("leaky-app", cp2.stdout)
        out = (cp.stdout + cp.stderr + cp2.stdout + cp2.stderr).encode()
        for v in list(self.secrets.values()) + list(self.tokens.values()):
            for enc in _encodings(v):
                self.assertNotIn(enc, out)


class AccessLogTest(KeywayTestCase):
    FIELDS = ("client", "team", "upstream", "method", "path", "status", "cache", "upstream_ms", "total_ms",
              "bytes_in", "bytes_out")

    @staticmethod
    def _matches(rec, path):
        # "path" may be the client's path or the upstream rest after the mount: accept either.
        p = rec.get("path")
        return p == path or (path.count("/") > 1 and p == "/" + path.split("/", 2)[2])

    def _access_for(self, path, count=1, timeout=5, settle=0.3):
        """Access records for `path`; waits for `count` of them, then `settle` s more for extras."""
        deadline = time.monotonic() + timeout
        while True:
            recs = [r for r in self.kw.access_records() if self._matches(r, path)]
            if len(recs) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(settle)
        return [r for r in self.kw.access_records() if self._matches(r, path)]

    def test_one_access_line_per_request_with_fields(self):
        self.fake.route("POST", "/log/me", Response(201, body=b"x" * 300))
        body = b"y" * 100
        resp = self.call("POST", "/bundleup-proxy/log/me?token_in_query=no&q=1", [("Content-Type", "text/plain")], body)
        self.assertEqual(resp.status, 201)
        recs = self._access_for("/bundleup-proxy/log/me")
        self.assertEqual(len(recs), 1, "expected one access line for one request: %r" % recs)
        rec = recs[0]
        for f in self.FIELDS:
            self.assertIn(f, rec, "access line lacks %s: %r" % (f, rec))
        self.assertEqual(rec["client"], "app-alpha")
        self.assertEqual(rec["team"], "alpha")
        self.assertEqual(rec["upstream"], "bundleup-proxy")
        self.assertEqual(rec["method"], "POST")
        self.assertEqual(int(rec["status"]), 201)
        self.assertIn("time", rec)
        for f in ("upstream_ms", "total_ms", "bytes_in", "bytes_out"):
            self.assertIsInstance(rec[f], (int, float), f)
            self.assertGreaterEqual(rec[f], 0, f)
        self.assertGreaterEqual(rec["total_ms"], rec["upstream_ms"])
        self.assertGreaterEqual(rec["bytes_in"], 100)
        self.assertGreaterEqual(rec["bytes_out"], 300)
        self.assertNotIn("token_in_query", str(rec))

    def test_errors_are_logged_too(self):
        self.call("GET", "/nope/denied-path")
        request(self.port, "GET", "/bundleup-proxy/unauth-path")
        self.assertEqual(len(self._access_for("/nope/denied-path")), 1)
        recs = self._access_for("/bundleup-proxy/unauth-path")
        self.assertEqual(len(recs), 1)
        self.assertEqual(int(recs[0]["status"]), 401)

    def test_many_requests_many_lines(self):
        with RawConnection(self.port) as c:
            for i in range(25):
                c.request("GET", "/bundleup-proxy/many", [("X-Keyway-Token", self.token())])
        self.assertEqual(len(self._access_for("/bundleup-proxy/many", 25)), 25)


class ShutdownTest(KeywayTestCase):

    def test_sigterm_drains_in_flight_and_exits_0(self):
        self.fake.route("GET", "/inflight", Response(body=b"finished", delay=1.5))
        c = RawConnection(self.port, timeout=20)
        try:
            c.send_request("GET", "/bundleup-proxy/inflight", [("X-Keyway-Token", self.token())])
            self.fake.wait_for_requests(1, 5)
            self.kw.signal(signal.SIGTERM)
            resp = c.read_response(timeout=20)
            self.assertEqual((resp.status, resp.body), (200, b"finished"))
        finally:
            c.close()
        code = self.kw.wait_exit(30)
        self.assertEqual(code, 0, "keywayd exit code after SIGTERM")
