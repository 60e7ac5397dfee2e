"""test_bosa.py: BOSA through keyway end to end (docs/auth.md "BOSA users", docs/bosa.md, docs/errors.md):
the real keywayd and keywayctl against fake_bosa.FakeBosa, driven by the SDK emulation in bosa_sdk.py
(the official SDK cannot be installed here) and by raw requests. Every test checks what the client got,
what the fake received (the proof of what was, or was not, sent upstream) and, where relevant, metrics."""

import hashlib
import json
import secrets as _secrets
import sys
import time
import unittest
import uuid
from pathlib import Path

from harness import (REPO, Keyway, KeywayTestCase, build_request, concurrent_requests, request, test_pki,
                     with_tls)

sys.path.insert(0, str(REPO / "tests" / "fakes"))

from fake_bosa import FakeBosa, Response, actions_of  # noqa: E402  (path set just above)
from bosa_sdk import ConnectorFile, GLConnectorError, GLConnectors, BosaConnector  # noqa: E402

# Users keywayd knows (keywayctl bosa-user add ... --team alpha) and the fake knows with the same
# secret, except "stale" whose stored secret the fake does not accept.
MAIN_USERS = ("alice", "bob", "hundred", "conc", "shortlived", "revoked", "always401", "stale", "passer")
RETRY = {"attempts": 3, "budget": "20s", "retry_after_cap": "10s", "backoff": "100ms"}


def _uid():
    return uuid.uuid4().hex[:10]


def _canary(tag):
    return "%s-%s" % (tag, _secrets.token_hex(12))


class BosaEnv:
    """A FakeBosa and a keywayd with upstream `bosa` (plus `bundleiq`, for a team without BOSA),
    provisioned through the real keywayctl:
      secret  bosa.api_key = the fake's client key
      teams   alpha (all upstreams), beta (all), iqonly (bundleiq only)
      clients app-alpha, app-beta, app-iq -> tokens[name]
      users   each of `users` granted to alpha, with the secret the fake knows (except "stale").
    tls=True: the fake serves TLS with a certificate of the test CA, which both upstreams trust
    (`tls: {ca_file}`); fake_request() talks to the fake directly either way."""

    def __init__(self, users=("alice", "bob"), bosa=None, start=True, tls=False):
        self.client_key = _canary("sk-client")
        self.user_secrets = {u: "sk-user-" + _secrets.token_urlsafe(24) for u in users}
        fake_users = dict(self.user_secrets)
        if "stale" in fake_users:
            fake_users["stale"] = "sk-user-" + _secrets.token_urlsafe(24)  # keyway's copy is outdated
        self.tls = tls
        self.fake = FakeBosa(self.client_key, users=fake_users,
                             ssl_context=test_pki().server_context() if tls else None).start()
        upstream = {"base_url": self.fake.url, "compat_listen": "127.0.0.1:0", "schema_ttl": "1h",
                    "user_token_margin": "60s", "retry": dict(RETRY)}
        upstream.update(bosa or {})
        self.kw = Keyway(with_tls({"bosa": upstream, "bundleiq": {"base_url": self.fake.url}}),
                         limits={"max_body_bytes": 4 << 20})
        try:
            kw = self.kw
            kw.init()
            kw.set_secret("bosa.api_key", self.client_key)
            kw.set_secret("bundleiq.api_key", _canary("iq"))
            kw.add_team("alpha")
            kw.add_team("beta")
            kw.add_team("iqonly", upstreams=["bundleiq"])
            self.tokens = {"app-alpha": kw.add_client("app-alpha", "alpha"),
                           "app-beta": kw.add_client("app-beta", "beta"),
                           "app-iq": kw.add_client("app-iq", "iqonly")}
            for user, secret in self.user_secrets.items():
                kw.ctl("bosa-user", "add", user, "--team", "alpha", input=secret + "\n")
            if start:
                kw.start()
        except BaseException:
            self.close()
            raise

    def close(self):
        try:
            self.kw.cleanup()
        finally:
            self.fake.stop()

    def fake_request(self, method, target, headers=None, body=None):
        """A request straight to the fake (not through keyway), over TLS when the fake serves it."""
        return request(self.fake.port, method, target, headers, body,
                       ssl_context=test_pki().client_context() if self.tls else None)


class BosaTestBase(KeywayTestCase):
    """KeywayTestCase's assertions and call() on a BosaEnv (set by subclasses) instead of its fakes."""

    env = None

    @classmethod
    def setUpClass(cls):
        unittest.TestCase.setUpClass()

    def setUp(self):
        pass  # KeywayTestCase.setUp resets its own fake; a BosaEnv is set per class or per test

    def use_env(self, env):
        self.env, self.fake, self.kw, self.tokens = env, env.fake, env.kw, env.tokens

    # -- requests --
    def sdk(self, client="app-alpha", compat=False, cls=GLConnectors):
        base = ("http://127.0.0.1:%d" % self.kw.compat_ports["bosa"] if compat
                else "http://127.0.0.1:%d/bosa" % self.kw.main_port)
        return cls(base, self.tokens[client] if client else "bosa")

    def discover(self, target, method="GET", headers=None):
        """A discovery request as the SDK sends it: no credentials at all."""
        return request(self.kw.main_port, method, "/bosa" + target, headers or [("Accept", "*/*")])

    def post(self, app, action, body, client="app-alpha", user=None, headers=(),
             ctype="application/json", port=None, prefix="/bosa", timeout=30):
        """POST an action the way the SDK does: the kw_ token as X-API-Key, the user as a bearer."""
        hdrs = [("X-API-Key", self.tokens[client])] if client else []
        if user:
            hdrs.append(("Authorization", "Bearer kwu_" + user))
        if ctype:
            hdrs.append(("Content-Type", ctype))
        hdrs += list(headers)
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body).encode("utf-8")
        return request(port or self.kw.main_port, "POST", "%s/connectors/%s/%s" % (prefix, app, action),
                       hdrs, body, timeout=timeout)

    # -- metrics --
    def metric(self, fragment, upstream="bosa"):
        """Sum of the samples whose metric name contains `fragment` (and that carry
        upstream="<upstream>", unless upstream is None). Fails when no series matches."""
        resp = request(self.kw.main_port, "GET", "/_keyway/metrics")
        self.assertEqual(resp.status, 200, resp)
        total, found = 0.0, False
        for line in resp.text.splitlines():
            if not line or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            name = series.split("{", 1)[0]
            if fragment not in name or name.endswith(("_bucket", "_sum", "_count")):
                continue
            if upstream is not None and 'upstream="%s"' % upstream not in series:
                continue
            total += float(value)
            found = True
        self.assertTrue(found, "no metric named *%s*%s in /_keyway/metrics" %
                        (fragment, "" if upstream is None else '{upstream="%s"}' % upstream))
        return total

    # -- assertions --
    def assertNoKeywayCredentials(self, reqs):
        """No kw_ client token, no kwu_ handle and no X-Keyway-* header reached the upstream."""
        for r in reqs:
            blob = "%s\n%s\n%s" % (r.target, "\n".join("%s: %s" % h for h in r.headers), r.body.decode("latin-1"))
            for token in self.tokens.values():
                self.assertNotIn(token, blob, "a client token reached the upstream: %r" % r)
            self.assertNotIn("kwu_", blob, "a user handle reached the upstream: %r" % r)
            for name, _ in r.headers:
                self.assertFalse(name.lower().startswith("x-keyway"), "%s reached the upstream" % name)

    def assertInjected(self, r, user=None):
        """The real client key, once; the user's current minted token (or no Authorization)."""
        self.assertEqual(r.header_all("X-API-Key"), [self.env.client_key], r.headers)
        if user is None:
            self.assertEqual(r.header_all("Authorization"), [], r.headers)
        else:
            minted = self.fake.tokens_of(user)
            self.assertTrue(minted, "nothing was minted for %s" % user)
            self.assertEqual(r.header_all("Authorization"), ["Bearer " + minted[-1]], r.headers)
            self.assertEqual(self.fake.user_of(r), user)
        self.assertNoKeywayCredentials([r])

    def assertInvalid(self, resp, pointers):
        """422 invalid_parameters whose details name every pointer in `pointers` (and nothing
        outside them: each reported pointer is one of them or below one)."""
        doc = self.assertKeywayError(resp, 422, "invalid_parameters", "Unprocessable Entity")
        details = doc["error"]["details"]
        got = set()
        for d in details:
            self.assertIsInstance(d.get("pointer"), str, d)
            self.assertIsInstance(d.get("reason"), str, d)
            self.assertTrue(d["reason"], d)
            got.add(d["pointer"])
        for p in pointers:
            self.assertIn(p, got, "no violation reported at %s: %r" % (p, details))
        for g in got:
            self.assertTrue(any(g == p or g.startswith(p + "/") for p in pointers),
                            "unexpected violation at %s: %r" % (g, details))
        return details

    def assertNothingSent(self, wait=0.3):
        time.sleep(wait)
        self.assertEqual(self.fake.action_requests(), [], "an action reached the upstream")
        self.assertEqual(self.fake.mint_requests(), [], "a token was minted")


# ================================================================================================
# The fake and the SDK emulation on their own (no keywayd): the wire format the tests rely on
# ================================================================================================

class BosaFakeAndSdkSelfTest(unittest.TestCase):

    def setUp(self):
        self.key = _canary("sk-client")
        self.fake = FakeBosa(self.key, users={"alice": "sk-user-alice"}).start()
        self.addCleanup(self.fake.stop)
        self.sdk = GLConnectors(self.fake.url, self.key)

    def test_sdk_wire_format(self):
        self.sdk.connect("github")
        d = self.sdk.sent[-1]
        self.assertEqual(d["target"], "/connectors/?modules=github")
        self.assertEqual([n for n, _ in d["headers"]], ["Host", "User-Agent", "Accept-Encoding", "Accept", "Connection"])
        tok = self.sdk.authenticate_bosa_user("alice", "sk-user-alice")["token"]
        body, status = self.sdk.execute("github", "create_issue", {"owner": " a ", "repo": "b", "title": "t",
                                                                   "body": "", "milestone": "3", "x": 1},
                                        token=tok, identifier="gh", headers={"X-Trace": "1"})
        self.assertEqual(status, 200)
        r = self.fake.action_requests("create_issue")[0]
        self.assertEqual([n for n, _ in r.headers],
                         ["Host", "User-Agent", "Accept-Encoding", "Accept", "Connection", "X-Trace", "X-API-Key",
                          "Authorization", "X-Bosa-Integration", "Content-Length", "Content-Type"])
        self.assertEqual(r.body, b'{"owner": "a", "repo": "b", "title": "t", "milestone": 3}')
        self.assertEqual((body["data"]["user"], body["data"]["integration"]), ("alice", "gh"))
        with self.assertRaisesRegex(ValueError, "Invalid parameters"):
            self.sdk.execute("github", "create_issue", {"owner": "a", "repo": "b", "milestone": "x", "title": "t"})

    def test_fake_auth_and_multipart_echo(self):
        body, status = GLConnectors(self.fake.url, "wrong").execute("github", "create_issue",
                                                                    {"owner": "a", "repo": "b", "title": "t"})
        self.assertEqual((status, body["error"]["code"]), (401, "INVALID_API_KEY"))
        body, status = self.sdk.execute("github", "create_issue", {"owner": "a", "repo": "b", "title": "t"},
                                        token="forged")
        self.assertEqual((status, body["error"]["code"]), (401, "INVALID_TOKEN"))
        f = ConnectorFile(b"\x00\xffdata", "d.bin", "application/octet-stream")
        body, status = self.sdk.execute("google_drive", "upload_file", {"file": f, "overwrite": True})
        self.assertEqual(status, 200)
        self.assertEqual([(p["name"], p["filename"], p.get("value")) for p in body["data"]["parts"]],
                         [("overwrite", None, "True"), ("file", "d.bin", None)])
        self.assertEqual(body["data"]["body_sha256"], hashlib.sha256(self.sdk.sent[-1]["body"]).hexdigest())

    def test_fake_pagination_and_scripts(self):
        pages = self.sdk.run("google_drive", "list_files", {"per_page": 4}).get_all_items()
        self.assertEqual([len(p["data"]) for p in pages], [4, 3])
        self.fake.script("list_files", Response.json({"error": {"message": "busy"}}, status=503), times=2)
        self.assertEqual(self.sdk.execute("google_drive", "list_files", {})[1], 503)
        self.assertEqual(self.sdk.execute("google_drive", "list_files", {}, max_attempts=2)[1], 200)
        self.assertEqual(len(self.fake.action_requests("list_files")), 5)
        # The SDK loads a connector once per instance, with ?modules= and no credentials.
        self.assertEqual([r.target for r in self.fake.discovery_fetches()], ["/connectors/?modules=google_drive"])
        self.assertFalse(self.fake.discovery_fetches()[0].has_header("X-API-Key"))


# ================================================================================================
# One daemon for most tests
# ================================================================================================

class BosaGatewayTest(BosaTestBase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.shared = BosaEnv(users=MAIN_USERS)
        cls.addClassCleanup(cls.shared.close)

    def setUp(self):
        self.use_env(self.shared)
        self.fake.clear_scripts()
        self.fake.clear_log()

    def tearDown(self):
        self.fake.clear_scripts()

    def doc(self):
        return self.fake.document

    # ---- discovery ------------------------------------------------------------------------------
    def test_discovery_without_token(self):
        doc = self.doc()
        names = self.discover("/connectors/names")
        self.assertEqual(names.status, 200, names)
        self.assertIn("application/json", names.header("Content-Type", ""))
        self.assertEqual(names.json(), list(doc.keys()))
        self.assertEqual(names.header("X-Keyway-Cache"), "HIT", names)
        self.assertRegex(names.header("Age", ""), r"^\d+$")

        for target in ("/connectors", "/connectors/"):
            with self.subTest(target=target):
                full = self.discover(target)
                self.assertEqual(full.status, 200, full)
                self.assertEqual(full.body, self.fake.document_bytes(), "not the stored document byte for byte")
                self.assertIn("application/json", full.header("Content-Type", ""))

        for target, want in (("/connectors/?modules=github", ["github"]),
                             ("/connectors?modules=twitter", ["twitter"]),
                             ("/connectors/?modules=github,google_drive", ["github", "google_drive"])):
            with self.subTest(target=target):
                resp = self.discover(target)
                self.assertEqual(resp.status, 200, resp)
                self.assertEqual(resp.json(), {n: doc[n] for n in want})  # path fields unchanged

        head = self.discover("/connectors/names", method="HEAD")
        self.assertEqual(head.status, 200, head)

        # The SDK: names, and connect() loads the actions (integration entries and GETs filtered out).
        sdk = self.sdk(client=None)
        self.assertEqual(sdk.get_available_modules(), list(doc.keys()))
        conn = sdk.connect("github")
        self.assertEqual(conn.actions, actions_of(doc["github"]))
        self.assertEqual(sdk.sent[-1]["target"], "/bosa/connectors/?modules=github")
        self.assertNotIn("integrations", conn.actions)

        # Many more calls: still served from the store. Whatever the fake saw was keyway's own
        # whole-document fetch, without credentials.
        for _ in range(25):
            self.assertEqual(self.discover("/connectors/?modules=twitter").status, 200)
        fetches = self.fake.discovery_requests()
        self.assertLessEqual(len(fetches), 1, fetches)
        for r in fetches:
            self.assertEqual((r.method, r.target), ("GET", "/connectors"))
            self.assertEqual(r.header_all("X-API-Key") + r.header_all("Authorization"), [])
        self.assertNoKeywayCredentials(self.fake.requests)

    def test_discovery_unknown_module_is_empty(self):
        resp = self.discover("/connectors/?modules=nosuch")
        self.assertEqual(resp.status, 200, resp)
        self.assertFalse(resp.json().get("nosuch"), resp)
        with self.assertRaisesRegex(GLConnectorError, "No connector found"):
            self.sdk().connect("nosuch")
        resp = self.discover("/connectors/?modules=nosuch")
        self.assertEqual(resp.status, 200, resp)
        # At most one refresh for the unknown name (and only if the last attempt was > 30 s ago).
        self.assertLessEqual(len(self.fake.discovery_fetches()), 1, self.fake.discovery_requests())

    # ---- action calls ---------------------------------------------------------------------------
    def test_sdk_execute_forwards_real_key_and_minted_token(self):
        sdk = self.sdk()
        params = {"owner": "acme", "repo": "api-" + _uid(), "title": "  Crash on start  ",
                  "labels": ["bug"], "metadata": {"priority": "2", "tags": ["p1"]}, "ignored_key": 1}
        body, status = sdk.execute("github", "create_issue", params, token="kwu_alice", identifier="alice-gh")
        self.assertEqual(status, 200, body)
        sent = sdk.sent[-1]
        self.assertEqual(json.loads(sent["body"]), {"owner": "acme", "repo": params["repo"], "title": "Crash on start",
                                                    "labels": ["bug"], "metadata": {"priority": 2, "tags": ["p1"]}})
        self.assertEqual(body["data"]["user"], "alice")
        self.assertEqual(body["data"]["integration"], "alice-gh")
        self.assertEqual(body["data"]["params"], json.loads(sent["body"]))
        self.assertIn("application/json", sdk.last_response.header("Content-Type", ""))
        self.assertTrue(sdk.last_response.has_header("X-Keyway-Cache"), sdk.last_response)

        acts = self.fake.action_requests("create_issue")
        self.assertEqual(len(acts), 1, acts)
        r = acts[0]
        self.assertEqual(r.target, "/connectors/github/create_issue")
        self.assertEqual(r.body, sent["body"], "the body was not forwarded byte for byte")
        self.assertEqual(r.header_all("Content-Type"), ["application/json"])
        self.assertEqual(r.header_all("X-Bosa-Integration"), ["alice-gh"])
        self.assertEqual(r.header("User-Agent"), "python-requests/2.28.1")
        self.assertInjected(r, user="alice")

        for m in self.fake.mint_requests():  # keyway's own mint (zero if alice's token was already held)
            self.assertEqual(m.header_all("X-API-Key"), [self.env.client_key])
            self.assertIn("application/json", m.header("Content-Type", ""))
            self.assertEqual(json.loads(m.body), {"identifier": "alice", "secret": self.env.user_secrets["alice"]})
        self.assertNoKeywayCredentials(self.fake.requests)

    def test_fluent_run_through_compat_listener(self):
        sdk = self.sdk(compat=True, cls=BosaConnector)
        conn = sdk.connect("github")
        self.assertEqual(sdk.sent[-1]["target"], "/connectors/?modules=github")
        res = (conn.action("create_issue").params({"owner": "acme", "repo": "r" + _uid(), "title": "fluent"})
               .token("kwu_bob").identifier("bob-gh").run())
        self.assertEqual(res.status, 200)
        self.assertIsInstance(res.data, dict)
        self.assertEqual(res.meta, {})
        self.assertEqual(res.data["user"], "bob")
        self.assertFalse(res.has_next())
        r = self.only_bosa_action("create_issue")
        self.assertEqual(r.header("X-Bosa-Integration"), "bob-gh")
        self.assertInjected(r, user="bob")

    def only_bosa_action(self, action):
        acts = self.fake.action_requests(action)
        self.assertEqual(len(acts), 1, acts)
        return acts[0]

    def test_client_placeholder_key_replaced_and_x_keyway_token_accepted(self):
        # X-Keyway-Token carries the client token; the SDK's default api_key "bosa" is replaced.
        resp = request(self.kw.main_port, "POST", "/bosa/connectors/github/create_issue",
                       [("X-Keyway-Token", self.tokens["app-alpha"]), ("X-API-Key", "bosa"),
                        ("Content-Type", "application/json")],
                       json.dumps({"owner": "acme", "repo": "x", "title": "t"}))
        self.assertEqual(resp.status, 200, resp)
        self.assertInjected(self.only_bosa_action("create_issue"))

    def test_invalid_calls_get_422_with_every_violation_and_nothing_is_sent(self):
        before = self.metric("validation_failures")
        secret_like = "sk-live-" + _uid() + " !"   # a value that must not be echoed back
        base = {"owner": "acme", "repo": "api"}
        issue = {"owner": "acme", "repo": "api", "title": "t"}
        cases = [
            ("list_pull_requests", {}, ["/owner", "/repo"]),                       # missing required
            ("list_pull_requests", dict(base, per_page="ten"), ["/per_page"]),     # wrong type (anyOf)
            ("list_pull_requests", dict(base, per_page=0), ["/per_page"]),         # minimum
            ("list_pull_requests", dict(base, per_page=101), ["/per_page"]),       # maximum
            ("list_pull_requests", dict(base, state="merged"), ["/state"]),        # enum through $ref
            ("list_pull_requests", dict(base, owner=secret_like), ["/owner"]),     # pattern
            ("list_pull_requests", dict(base, owner=""), ["/owner"]),              # minLength
            ("list_pull_requests", dict(base, labels=["ok", 7]), ["/labels/1"]),   # nested array item
            ("list_pull_requests", dict(base, labels=["x"] * 11), ["/labels"]),    # maxItems
            ("list_pull_requests", dict(base, response_filters=[{"field_name": "a", "type": "regex"}]),
             ["/response_filters/0/type"]),                                        # enum in $defs item
            ("list_pull_requests", dict(base, response_filters=[{"type": "string"}]),
             ["/response_filters/0/field_name"]),                                  # nested required
            ("create_issue", dict(issue, kind="task"), ["/kind"]),                 # const
            ("create_issue", dict(issue, title=""), ["/title"]),                   # minLength
            ("create_issue", dict(issue, assignees=["ok", "Bad Name"]), ["/assignees/1"]),
            ("create_issue", dict(issue, metadata={"priority": 9}), ["/metadata/priority"]),
            ("create_issue", dict(issue, metadata={"estimate": 0}), ["/metadata/priority", "/metadata/estimate"]),
            ("create_issue", dict(issue, milestone=1.5), ["/milestone"]),
            ("create_issue", [], [""]),                                            # not an object
            ("misc/odd_action", {"name": "n", "upper": "lower only"}, ["/upper"]),  # leading look-ahead
            # everything at once: one entry per violation
            ("create_issue", {"repo": 5, "title": "", "kind": "x", "labels": "bug", "metadata": {"priority": "1"}},
             ["/owner", "/repo", "/title", "/kind", "/labels", "/metadata/priority"]),
        ]
        for action, body, pointers in cases:
            app, _, act = action.rpartition("/")
            with self.subTest(action=action, body=body):
                resp = self.post(app or "github", act, body, user="alice")
                self.assertInvalid(resp, pointers)
                self.assertNotIn(secret_like, resp.text, "an input value was echoed in the error")
        self.assertNothingSent()
        self.assertEqual(self.metric("validation_failures") - before, len(cases))

        # The SDK checks neither enum nor bounds nor patterns: keyway's 422 reaches it as (json, 422).
        body, status = self.sdk().execute("github", "list_pull_requests",
                                          {"owner": "acme", "repo": "api", "state": "merged", "per_page": 500},
                                          token="kwu_alice")
        self.assertEqual(status, 422)
        self.assertEqual(body["error"]["code"], "invalid_parameters")
        self.assertEqual({d["pointer"] for d in body["error"]["details"]} >= {"/state", "/per_page"}, True, body)
        self.assertNothingSent(wait=0)

    def test_hostile_pattern_answers_fast(self):
        evil = "a" * 5000 + "!"
        started = time.monotonic()
        resp = self.post("misc", "odd_action", {"name": "n", "evil": evil})
        self.assertLess(time.monotonic() - started, 3.0, "a backtracking pattern held the request")
        self.assertInvalid(resp, ["/evil"])
        ok = self.post("misc", "odd_action", {"name": "n", "evil": "a" * 5000, "upper": "Has Upper",
                                              "lookbehind": "anything", "remote": {"x": 1}})
        self.assertEqual(ok.status, 200, ok)  # unenforced constructs are reported, not rejected
        self.assertEqual(len(self.fake.action_requests("odd_action")), 1)

    def test_body_not_json_is_400_and_empty_body_is_an_empty_object(self):
        for body, ctype in ((b'{"owner": "acme",', "application/json"), (b"owner=acme", "text/plain"),
                            (b"\xff\xfe{}", "application/json"), (b'{"a": 1} trailing', None)):
            with self.subTest(body=body, ctype=ctype):
                resp = self.post("github", "create_issue", body, ctype=ctype)
                self.assertKeywayError(resp, 400, "bad_request", "Bad Request")
        resp = self.post("github", "create_issue", b"")
        self.assertInvalid(resp, ["/owner", "/repo", "/title"])
        self.assertNothingSent()

    def test_unknown_action_or_connector_is_404_listing_actions(self):
        resp = self.post("github", "delete_everything", {"owner": "acme"})
        doc = self.assertKeywayError(resp, 404, "not_found", "Not Found")
        msg = doc["error"]["message"]
        for a in actions_of(self.doc()["github"]):
            self.assertIn(a, msg)
        self.assertNotIn("get_rate_limit", msg)
        # An entry that is not an action (GET) is not callable as one.
        self.assertKeywayError(self.post("github", "get_rate_limit", {}), 404, "not_found")
        self.assertKeywayError(self.post("nosuch", "list_things", {}), 404, "not_found")
        with self.assertRaisesRegex(ValueError, "Available actions"):
            self.sdk().execute("github", "delete_everything", {})
        self.assertNothingSent()

    def test_authentication_and_team_access(self):
        body = {"owner": "acme", "repo": "x", "title": "t"}
        self.assertKeywayError(self.post("github", "create_issue", body, client=None), 401, "unauthorized")
        resp = request(self.kw.main_port, "POST", "/bosa/connectors/github/create_issue",
                       [("X-API-Key", "bosa"), ("Content-Type", "application/json")], json.dumps(body))
        self.assertKeywayError(resp, 401, "unauthorized")
        self.assertKeywayError(self.post("github", "create_issue", body, client="app-iq"), 403, "forbidden")
        # The client token as a bearer (the BundleUp spelling): 401 saying where it goes on BOSA,
        # and never forwarded anywhere.
        token = self.tokens["app-alpha"]
        resp = request(self.kw.main_port, "POST", "/bosa/connectors/github/create_issue",
                       [("Authorization", "Bearer " + token), ("Content-Type", "application/json")], json.dumps(body))
        message = self.assertKeywayError(resp, 401, "unauthorized")["error"]["message"]
        self.assertIn("X-API-Key: kw_", message)
        self.assertIn("X-Keyway-Token: kw_", message)
        self.assertIn("not as Authorization: Bearer", message)
        self.assertNotIn(token, resp.text)
        self.assertNothingSent()
        self.assertNoKeywayCredentials(self.fake.requests)

    # ---- users and tokens -----------------------------------------------------------------------
    def test_user_token_minted_once_for_100_calls(self):
        mints_before = self.metric("token_mint", upstream=None)
        sdk = self.sdk()
        for i in range(100):
            body, status = sdk.execute("github", "create_issue", {"owner": "acme", "repo": "r", "title": "n%d" % i},
                                       token="kwu_hundred")
            self.assertEqual(status, 200, body)
            self.assertEqual(body["data"]["user"], "hundred")
        self.assertEqual(self.fake.mints("hundred"), 1)
        acts = self.fake.action_requests("create_issue")
        self.assertEqual(len(acts), 100)
        token = self.fake.tokens_of("hundred")[0]
        self.assertEqual({r.header("Authorization") for r in acts}, {"Bearer " + token})
        self.assertEqual(self.metric("token_mint", upstream=None) - mints_before, 1)
        self.assertNoKeywayCredentials(self.fake.requests)

    def test_concurrent_first_calls_of_a_user_share_one_mint(self):
        port = self.kw.main_port
        raws = [build_request("POST", "/bosa/connectors/github/create_issue",
                              [("X-API-Key", self.tokens["app-alpha"]), ("Authorization", "Bearer kwu_conc"),
                               ("Content-Type", "application/json")],
                              json.dumps({"owner": "acme", "repo": "r", "title": "c%d" % i}),
                              host="127.0.0.1:%d" % port) for i in range(16)]
        results = concurrent_requests(port, raws, timeout=30)
        for res in results:
            self.assertNotIsInstance(res, Exception, res)
            self.assertEqual(res.status, 200, res)
        self.assertEqual(self.fake.mints("conc"), 1)
        self.assertEqual(len(self.fake.mint_requests("conc")), 1)
        self.assertEqual(len(self.fake.action_requests("create_issue")), 16)

    def test_user_token_reminted_shortly_before_expiry(self):
        # 63 s lifetime with user_token_margin 60s: reusable for 3 s, then minted anew.
        self.fake.set_token_lifetime("shortlived", 63)
        sdk = self.sdk()
        call = {"owner": "acme", "repo": "r", "title": "t"}
        self.assertEqual(sdk.execute("github", "create_issue", call, token="kwu_shortlived")[1], 200)
        minted_at = time.monotonic()
        self.assertEqual(sdk.execute("github", "create_issue", call, token="kwu_shortlived")[1], 200)
        self.assertEqual(self.fake.mints("shortlived"), 1)
        time.sleep(max(0.0, minted_at + 3.5 - time.monotonic()))
        self.assertEqual(sdk.execute("github", "create_issue", call, token="kwu_shortlived")[1], 200)
        self.assertEqual(self.fake.mints("shortlived"), 2)
        first, second = self.fake.tokens_of("shortlived")
        acts = self.fake.action_requests("create_issue")
        self.assertEqual([r.header("Authorization") for r in acts],
                         ["Bearer " + first, "Bearer " + first, "Bearer " + second])

    def test_upstream_401_remints_once_and_resends_once(self):
        sdk = self.sdk()
        call = {"owner": "acme", "repo": "r", "title": "t"}
        self.assertEqual(sdk.execute("github", "create_issue", call, token="kwu_revoked")[1], 200)
        self.assertEqual(self.fake.mints("revoked"), 1)
        self.fake.revoke_tokens("revoked")
        self.fake.clear_log()
        body, status = sdk.execute("github", "create_issue", call, token="kwu_revoked")
        self.assertEqual(status, 200, body)
        self.assertEqual(self.fake.mints("revoked"), 2)
        old, new = self.fake.tokens_of("revoked")
        seen = [(r.path, r.header("Authorization")) for r in self.fake.requests]
        self.assertEqual(seen, [("/connectors/github/create_issue", "Bearer " + old),
                                ("/auth/tokens", None),
                                ("/connectors/github/create_issue", "Bearer " + new)])
        acts = self.fake.action_requests()
        self.assertEqual(acts[0].body, acts[1].body)

        # A second 401 (after the re-mint) goes to the client as the upstream sent it.
        self.fake.always_401("always401")
        self.fake.clear_log()
        resp = self.post("github", "create_issue", call, user="always401")
        self.assertEqual(resp.status, 401, resp)
        self.assertEqual(resp.json(), {"error": {"message": "Token rejected", "code": "INVALID_TOKEN"}})
        self.assertEqual(len(self.fake.action_requests()), 2)
        self.assertEqual(self.fake.mints("always401"), 2)

    def test_403_for_ungranted_team_and_unknown_user_alike(self):
        # Same client (team beta, granted no user): bob exists (granted to alpha only), the other
        # identifier does not. The answers may name the identifier asked for, nothing else differs.
        call = {"owner": "acme", "repo": "r", "title": "t"}
        nobody = "nobody" + _uid()
        not_granted = self.post("github", "create_issue", call, client="app-beta", user="bob")
        unknown = self.post("github", "create_issue", call, client="app-beta", user=nobody)
        unknown_hdr = self.post("github", "create_issue", call, headers=[("X-Keyway-User", nobody)])
        a = self.assertKeywayError(not_granted, 403, "forbidden", "Forbidden")
        b = self.assertKeywayError(unknown, 403, "forbidden", "Forbidden")
        self.assertKeywayError(unknown_hdr, 403, "forbidden", "Forbidden")
        self.assertEqual(json.dumps(a).replace("bob", "USER"), json.dumps(b).replace(nobody, "USER"),
                         "an unknown user and an ungranted team must not be told apart")
        # The client's message names both commands (it cannot say which applies)...
        message = b["error"]["message"]
        self.assertIn("keywayctl bosa-user add %s --team beta" % nobody, message)
        self.assertIn("keywayctl bosa-user grant %s --team beta" % nobody, message)
        self.assertNothingSent()
        # ...the operator's access line says which: add an unknown user, grant a known one.
        for user, client, team, command in ((nobody, "app-beta", "beta", "bosa-user add"),
                                            ("bob", "app-beta", "beta", "bosa-user grant"),
                                            (nobody, "app-alpha", "alpha", "bosa-user add")):
            with self.subTest(user=user, client=client):
                rec = self.kw.wait_for_record(lambda r: r.get("msg") == "access" and r.get("user") == user
                                              and r.get("client") == client and r.get("status") == 403)
                self.assertIsNotNone(rec, "no access line naming BOSA user %s for %s" % (user, client))
                self.assertEqual((rec["team"], rec.get("error")), (team, "forbidden"), rec)
                self.assertIn("keywayctl %s %s --team %s" % (command, user, team), rec.get("cause", ""))
                other = "bosa-user grant" if command == "bosa-user add" else "bosa-user add"
                self.assertNotIn(other, rec.get("cause", ""))

    def test_mint_refused_by_upstream_is_403(self):
        failures = self.metric("token_mint_failures", upstream=None)
        resp = self.post("github", "create_issue", {"owner": "acme", "repo": "r", "title": "t"}, user="stale")
        doc = self.assertKeywayError(resp, 403, "forbidden", "Forbidden")
        self.assertIn("stale", doc["error"]["message"])
        mints = self.fake.mint_requests("stale")
        self.assertEqual(len(mints), 1)
        self.assertEqual(self.fake.action_requests(), [])
        self.assertNotIn(self.env.user_secrets["stale"], resp.text)
        # The operator hears of it: a warn line (user, upstream, cause) and the failure counter.
        line = self.kw.wait_for_record(lambda r: r.get("level") == "warn" and r.get("user") == "stale"
                                       and r.get("msg") == "BOSA user token mint failed")
        self.assertIsNotNone(line, "no warn line for the failed mint")
        self.assertEqual(line.get("upstream"), "bosa", line)
        self.assertIn("BOSA refused the stored secret of user 'stale' (status 401)", line.get("cause", ""))
        self.assertEqual(self.metric("token_mint_failures", upstream=None) - failures, 1)
        rec = self.kw.wait_for_record(lambda r: r.get("msg") == "access" and r.get("user") == "stale")
        self.assertEqual((rec.get("status"), rec.get("error")), (403, "forbidden"), rec)
        self.assertEqual(rec.get("cause"), doc["error"]["message"])
        # Positive control: keyway's stored secret went to BOSA in the mint, and is in no log line.
        self.assertEqual(json.loads(mints[0].body)["secret"], self.env.user_secrets["stale"])
        self.assertNotIn(self.env.user_secrets["stale"], self.kw.stderr_text())

    def test_access_line_names_the_user_and_how_its_token_was_had(self):
        user, secret = "logged" + _uid(), "sk-user-" + _secrets.token_urlsafe(24)
        self.fake.add_user(user, secret)
        self.kw.ctl("bosa-user", "add", user, "--team", "alpha", input=secret + "\n")
        call = {"owner": "acme", "repo": "r", "title": "t"}
        for _ in range(2):
            self.assertEqual(self.post("github", "create_issue", call, user=user).status, 200)
        deadline = time.monotonic() + 5
        while len([r for r in self.kw.access_records() if r.get("user") == user]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        recs = [r for r in self.kw.access_records() if r.get("user") == user]
        self.assertEqual([(r["client"], r["team"], r["status"], r.get("credential"), r.get("user_token"))
                          for r in recs],
                         [("app-alpha", "alpha", 200, "bosa.api_key", "minted"),
                          ("app-alpha", "alpha", 200, "bosa.api_key", "kept")], recs)
        # Positive control: the secret (in the mint) and the minted token (with the actions) went
        # to BOSA; neither, nor the client key, is in keywayd's log.
        self.assertEqual(json.loads(self.fake.mint_requests(user)[0].body)["secret"], secret)
        token = self.fake.tokens_of(user)[0]
        self.assertEqual([r.header("Authorization") for r in self.fake.action_requests("create_issue")],
                         ["Bearer " + token] * 2)
        log = self.kw.stderr_text()
        for value in (secret, token, self.env.client_key):
            self.assertNotIn(value, log)

    def test_x_keyway_user_selects_the_user_and_wins_over_a_handle(self):
        call = {"owner": "acme", "repo": "r", "title": "t"}
        resp = self.post("github", "create_issue", call, headers=[("X-Keyway-User", "alice")])
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.json()["data"]["user"], "alice")
        resp = self.post("github", "create_issue", call, user="bob", headers=[("X-Keyway-User", "alice")])
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.json()["data"]["user"], "alice")
        for r in self.fake.action_requests():
            self.assertInjected(r, user="alice")

    def test_non_kwu_bearer_passed_through(self):
        # The app authenticates a user itself (through keyway: /auth/tokens is a pass-through route)...
        sdk = self.sdk()
        tok = sdk.authenticate_bosa_user("passer", self.env.user_secrets["passer"])
        self.assertEqual(tok["token_type"], "Bearer")
        self.assertEqual(self.fake.tokens_of("passer"), [tok["token"]])
        m = self.fake.mint_requests("passer")[0]
        self.assertEqual(m.header_all("X-API-Key"), [self.env.client_key])
        # ...then uses the real token: passed through unchanged, nothing minted by keyway.
        body, status = sdk.execute("github", "create_issue", {"owner": "a", "repo": "b", "title": "c"},
                                   token=tok["token"])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["data"]["user"], "passer")
        self.assertEqual(self.fake.mints("passer"), 1)
        # A bearer the upstream does not know is passed through too, and its 401 comes back as is.
        self.fake.external_tokens.add("ext-token-" + _uid())
        ext = next(iter(self.fake.external_tokens))
        body, status = sdk.execute("github", "create_issue", {"owner": "a", "repo": "b", "title": "c"}, token=ext)
        self.assertEqual((status, body["data"]["user"]), (200, "external"))
        body, status = sdk.execute("github", "create_issue", {"owner": "a", "repo": "b", "title": "c"},
                                   token="not-a-real-token")
        self.assertEqual(status, 401)
        self.assertEqual(body["error"]["code"], "INVALID_TOKEN")
        auths = [r.header("Authorization") for r in self.fake.action_requests()]
        self.assertEqual(auths, ["Bearer " + tok["token"], "Bearer " + ext, "Bearer not-a-real-token"])
        self.assertEqual(len(self.fake.mint_requests()), 1)
        self.assertNoKeywayCredentials(self.fake.requests)

    # ---- retries --------------------------------------------------------------------------------
    def _issue(self):
        return {"owner": "acme", "repo": "r" + _uid(), "title": "t"}

    def _list(self):
        return {"owner": "acme", "repo": "r" + _uid()}

    def test_429_with_short_retry_after_is_retried(self):
        before = self.metric("retries")
        self.fake.script("create_issue", Response.json({"error": {"message": "slow down", "code": "RATE"}},
                                                        status=429, headers=[("Retry-After", "1")]))
        resp = self.post("github", "create_issue", self._issue())
        self.assertEqual(resp.status, 200, resp)
        acts = self.fake.action_requests("create_issue")
        self.assertEqual(len(acts), 2)
        self.assertGreaterEqual(acts[1].received_at - acts[0].received_at, 0.9, "Retry-After: 1 not honoured")
        self.assertEqual(acts[0].body, acts[1].body)
        self.assertEqual(self.metric("retries") - before, 1)

    def test_429_with_retry_after_over_the_cap_goes_to_the_client(self):
        answer = Response.json({"error": {"message": "quota", "code": "RATE_LIMIT"}}, status=429,
                               headers=[("Retry-After", "3600")])
        self.fake.script("create_issue", answer)
        self.fake.script("list_issues", answer)
        for action, body in (("create_issue", self._issue()), ("list_issues", self._list())):
            with self.subTest(action=action):
                started = time.monotonic()
                resp = self.post("github", action, body)
                self.assertLess(time.monotonic() - started, 5)
                self.assertEqual(resp.status, 429, resp)
                self.assertEqual(resp.header("Retry-After"), "3600")
                self.assertEqual(resp.body, answer.body)
                self.assertEqual(len(self.fake.action_requests(action)), 1)

    def test_5xx_retried_for_safe_actions_only(self):
        before = self.metric("retries")
        self.fake.script("list_issues", Response.json({"error": {"message": "busy"}}, status=503), times=2)
        resp = self.post("github", "list_issues", self._list())
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(len(self.fake.action_requests("list_issues")), 3)
        self.assertEqual(self.metric("retries") - before, 2)

        answer = Response.json({"error": {"message": "down"}}, status=503)
        self.fake.script("create_issue", answer)
        resp = self.post("github", "create_issue", self._issue())
        self.assertEqual(resp.status, 503, resp)
        self.assertEqual(resp.body, answer.body)
        self.assertEqual(len(self.fake.action_requests("create_issue")), 1)
        self.assertEqual(self.metric("retries") - before, 2)

    def test_never_more_than_attempts(self):
        for i in range(1, 7):
            self.fake.script("list_issues", Response.json({"error": {"message": "busy", "n": i}}, status=503))
        resp = self.post("github", "list_issues", self._list())
        self.assertEqual(resp.status, 503, resp)
        self.assertEqual(resp.json()["error"]["n"], 3, "the client must get the last upstream answer")
        self.assertEqual(len(self.fake.action_requests("list_issues")), 3)

        self.fake.script("create_issue", Response.json({"error": {"message": "rate"}}, status=429), times=6)
        resp = self.post("github", "create_issue", self._issue())
        self.assertEqual(resp.status, 429, resp)
        self.assertEqual(len(self.fake.action_requests("create_issue")), 3)

    def test_failures_after_sending_retried_for_safe_actions_only(self):
        for label, failure in (("reset after the head", FakeBosa.reset_response()),
                               ("reset before any byte", FakeBosa.reset_response(partial=b"")),
                               ("body cut short", FakeBosa.cut_short())):
            with self.subTest(failure=label):
                self.fake.clear_log()
                self.fake.script("list_issues", failure)
                resp = self.post("github", "list_issues", self._list())
                self.assertEqual(resp.status, 200, resp)
                self.assertEqual(len(self.fake.action_requests("list_issues")), 2)
        self.fake.clear_log()
        self.fake.script("create_issue", FakeBosa.reset_response())
        resp = self.post("github", "create_issue", self._issue())
        self.assertKeywayError(resp, 502, "upstream_unreachable")
        self.assertEqual(len(self.fake.action_requests("create_issue")), 1)

    def test_refused_connection_retried_for_any_action(self):
        before = self.metric("retries")
        back = self.fake.refuse_for(0.25)
        try:
            resp = self.post("github", "create_issue", self._issue())
        finally:
            self.assertTrue(back.wait(5))
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(len(self.fake.action_requests("create_issue")), 1)
        self.assertGreaterEqual(self.metric("retries") - before, 1)

    # ---- files ----------------------------------------------------------------------------------
    def test_multipart_upload_forwarded_byte_identical(self):
        sdk = self.sdk()
        content = bytes(range(256)) * 8 + b"\r\n--not-a-boundary\r\n"
        f = ConnectorFile(content, filename="report.bin", content_type="application/octet-stream",
                          headers={"X-Part-Tag": "t1"})
        body, status = sdk.execute("google_drive", "upload_file",
                                   {"file": f, "folder_id": " root ", "overwrite": True, "chunk_size": 5,
                                    "tags": ["a", "b"], "options": {"convert": True}}, token="kwu_alice")
        self.assertEqual(status, 200, body)
        sent = sdk.sent[-1]
        r = self.only_bosa_action("upload_file")
        self.assertEqual(r.body, sent["body"], "multipart body changed on the way")
        self.assertEqual(r.header_all("Content-Type"), [dict(sent["headers"])["Content-Type"]])
        self.assertInjected(r, user="alice")
        parts = body["data"]["parts"]
        self.assertEqual([(p["name"], p.get("value")) for p in parts[:-1]],
                         [("folder_id", "root"), ("overwrite", "True"), ("chunk_size", "5"), ("tags", "a"),
                          ("tags", "b"), ("options", "convert")])
        filepart = parts[-1]
        self.assertEqual((filepart["name"], filepart["filename"], filepart["content_type"], filepart["size"]),
                         ("file", "report.bin", "application/octet-stream", len(content)))
        self.assertEqual(filepart["headers"], [["X-Part-Tag", "t1"]])
        self.assertEqual(filepart["sha256"], hashlib.sha256(content).hexdigest())

        # Multipart is forwarded intact (not validated) even to an action without a file field.
        self.fake.clear_log()
        raw = (b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nfrom a form\r\n--XyZ--\r\n")
        resp = self.post("github", "create_issue", raw, ctype="multipart/form-data; boundary=XyZ")
        self.assertEqual(resp.status, 200, resp)
        r = self.only_bosa_action("create_issue")
        self.assertEqual(r.body, raw)
        self.assertEqual(r.header("Content-Type"), "multipart/form-data; boundary=XyZ")

    def test_form_encoded_upload_forwarded_intact(self):
        sdk = self.sdk()
        body, status = sdk.execute("google_drive", "upload_file",
                                   {"file": b"raw \xff bytes & more", "overwrite": False, "tags": ["x", "y z"]})
        self.assertEqual(status, 200, body)
        sent = sdk.sent[-1]
        r = self.only_bosa_action("upload_file")
        self.assertEqual(r.header_all("Content-Type"), ["application/x-www-form-urlencoded"])
        self.assertEqual(r.body, sent["body"])
        self.assertEqual(body["data"]["fields"], [["file", "raw \xff bytes & more"], ["overwrite", "False"],
                                                  ["tags", "x"], ["tags", "y z"]])
        self.assertInjected(r)

    def test_download_passes_content_type_and_disposition(self):
        sdk = self.sdk()
        f, status = sdk.execute("google_drive", "download_file", {"file_id": "F" + _uid()}, token="kwu_alice")
        self.assertEqual(status, 200)
        self.assertIsInstance(f, ConnectorFile)
        file_id = json.loads(sdk.sent[-1]["body"])["file_id"]
        self.assertEqual(f.content_type, "application/pdf")
        self.assertEqual(f.filename, "report-%s.pdf" % file_id)
        self.assertEqual(f.file, bytes(range(256)) * 3 + file_id.encode())
        raw = sdk.last_response
        self.assertEqual(raw.header("Content-Disposition"), 'attachment; filename="report-%s.pdf"' % file_id)
        self.assertEqual(raw.header_all("Content-Type"), ["application/pdf"])
        res = sdk.run("google_drive", "download_file", {"file_id": file_id}, token="kwu_alice")
        self.assertIsInstance(res.data, ConnectorFile)
        self.assertEqual(res.meta, {})
        self.assertFalse(res.has_next())

    def test_response_without_content_type_gets_one(self):
        sdk = self.sdk()
        f, status = sdk.execute("github", "get_raw_blob", {"sha": "abcdef1"})  # the SDK crashes without one
        self.assertEqual(status, 200)
        self.assertTrue(sdk.last_response.header("Content-Type"), sdk.last_response)
        self.assertEqual(f.file, b"blob:abcdef1")
        r = self.only_bosa_action("get_raw_blob")
        self.assertInjected(r)

    # ---- pagination -----------------------------------------------------------------------------
    def test_next_page_by_cursor_with_distinct_cache_keys(self):
        sdk = self.sdk()
        owner = "o" + _uid()
        params = {"owner": owner, "repo": "api", "per_page": 3}
        res = sdk.connect("github").action("list_pull_requests").params(params).token("kwu_alice").run()
        self.assertTrue(res.has_next())
        pages = res.get_all_items()
        self.assertEqual([[i["number"] for i in p["data"]] for p in pages], [[1, 2, 3], [4, 5, 6], [7]])
        acts = self.fake.action_requests("list_pull_requests")
        self.assertEqual([json.loads(r.body).get("cursor") for r in acts], [None, "cur_3", "cur_6"])
        for r in acts:
            self.assertInjected(r, user="alice")

        # Same calls again: all three pages from the cache (each its own key), nothing upstream.
        self.fake.clear_log()
        res = sdk.run("github", "list_pull_requests", params, token="kwu_alice")
        self.assertEqual(sdk.last_response.header("X-Keyway-Cache"), "HIT", sdk.last_response)
        page2 = res.next_page()
        self.assertEqual(sdk.last_response.header("X-Keyway-Cache"), "HIT", sdk.last_response)
        self.assertEqual([i["number"] for i in page2.data], [4, 5, 6])
        self.assertEqual(self.fake.action_requests(), [])
        self.assertEqual([i["number"] for i in page2.prev_page().data], [1, 2, 3])  # cursor cur_0

        # Another user: another identity, never served alice's entries.
        self.fake.clear_log()
        res = sdk.run("github", "list_pull_requests", params, token="kwu_bob")
        self.assertEqual(sdk.last_response.header("X-Keyway-Cache"), "MISS", sdk.last_response)
        self.assertEqual(res.data[0]["user"], "bob")
        self.assertEqual(len(self.fake.action_requests()), 1)

    def test_next_page_by_page_number(self):
        sdk = self.sdk()
        res = sdk.run("github", "search_commits", {"query": "q" + _uid(), "limit": 2}, token="kwu_alice")
        pages = res.get_all_items()
        self.assertEqual([p["meta"]["page"] for p in pages], [1, 2, 3])
        self.assertEqual([len(p["data"]) for p in pages], [2, 2, 1])
        shas = [c["sha"] for p in pages for c in p["data"]]
        self.assertEqual(len(set(shas)), 5, "a later page was answered with an earlier page's entry")
        acts = self.fake.action_requests("search_commits")
        self.assertEqual([json.loads(r.body).get("page") for r in acts], [None, 2, 3])

    # ---- pass-through routes --------------------------------------------------------------------
    def test_users_me_and_integrations_pass_through(self):
        sdk = self.sdk()
        me = sdk.get_user_info("kwu_alice")
        self.assertEqual(me["identifier"], "alice")
        self.assertFalse(sdk.user_has_integration("github", "kwu_alice"))
        url = sdk.initiate_connector_auth("github", "kwu_alice", "https://app.example/cb")
        self.assertTrue(url.startswith("https://github.com/login/oauth/authorize?"), url)
        sdk.initiate_plugin_configuration("github", "kwu_alice", {"identifier": "alice-gh", "url": "x"})
        sdk.initiate_plugin_configuration("github", "kwu_alice", {"identifier": "alice-gh2", "url": "y"})
        self.assertTrue(sdk.user_has_integration("github", "kwu_alice"))
        self.assertEqual(sdk.get_integration("github", "kwu_alice", "alice-gh")["selected"], True)
        self.assertEqual(sdk.select_integration("github", "kwu_alice", "alice-gh2"), (True, "success"))
        self.assertEqual(sdk.get_integration("github", "kwu_alice", "alice-gh2")["selected"], True)
        self.assertEqual(sdk.remove_integration("github", "kwu_alice", "alice-gh"), (True, "success"))
        self.assertEqual(sdk.remove_integration("github", "kwu_alice", "alice-gh"),
                         (False, "integration alice-gh not found"))
        self.assertEqual(len(sdk.get_user_info("kwu_alice")["integrations"]), 1)
        reqs = [r for r in self.fake.requests if r.path != "/auth/tokens"]
        self.assertEqual(len(reqs), 12)
        for r in reqs:
            self.assertInjected(r, user="alice")
        # Upstream errors come back unchanged (status and JSON body).
        resp = request(self.kw.main_port, "GET", "/bosa/connectors/nosuch/integration-exists",
                       [("X-API-Key", self.tokens["app-alpha"]), ("Authorization", "Bearer kwu_alice")])
        self.assertEqual(resp.status, 404, resp)
        self.assertEqual(resp.json(), {"error": {"message": "Connector nosuch not found", "code": "NOT_FOUND"}})
        # Without a client token these routes are refused by keyway, not forwarded.
        self.fake.clear_log()
        resp = request(self.kw.main_port, "GET", "/bosa/users/me", [("Authorization", "Bearer kwu_alice")])
        self.assertKeywayError(resp, 401, "unauthorized")
        self.assertEqual(self.fake.requests, [])

    def test_create_user_and_authenticate_pass_through(self):
        sdk = self.sdk()
        ident = "newbie-" + _uid()
        created = sdk.create_bosa_user(ident)
        self.assertTrue(created["secret"].startswith("sk-user-"))
        tok = sdk.authenticate_bosa_user(ident, created["secret"])
        self.assertEqual(sdk.get_user_info(tok["token"])["identifier"], ident)
        with self.assertRaises(ValueError):
            sdk.authenticate_bosa_user(ident, "sk-user-wrong")
        for r in self.fake.requests:
            self.assertEqual(r.header_all("X-API-Key"), [self.env.client_key])
        self.assertEqual([r.path for r in self.fake.requests], ["/users", "/auth/tokens", "/users/me", "/auth/tokens"])
        self.assertNoKeywayCredentials(self.fake.requests)

    # ---- keywayctl and hygiene ------------------------------------------------------------------
    def test_keywayctl_schemas_list_reports_unenforced_constructs(self):
        self.assertEqual(self.discover("/connectors/names").status, 200)  # something is stored
        cp = self.kw.ctl("schemas", "list")
        out = cp.stdout
        self.assertIn("bosa", out)
        for name in self.doc():
            self.assertIn(name, out)
        self.assertRegex(out, r"github\D+%d\b" % len(actions_of(self.doc()["github"])),
                         "github's action count missing:\n" + out)
        self.assertIn("/misc/odd_action/request_body/properties/remote", out)
        self.assertIn("/misc/odd_action/request_body/properties/lookbehind", out)
        self.assertNotIn("/properties/upper", out, "an enforced pattern was listed as unenforced")

    def test_no_secret_in_logs_metrics_or_state_files(self):
        self.assertEqual(self.post("github", "create_issue", {"owner": "a", "repo": "b", "title": "c"},
                                   user="alice").status, 200)
        secrets = [self.env.client_key] + list(self.env.user_secrets.values()) + list(self.tokens.values())
        for user in self.env.user_secrets:
            secrets += self.fake.tokens_of(user)
        metrics = request(self.kw.main_port, "GET", "/_keyway/metrics").text
        logs = self.kw.stderr_text() + "\n".join(self.kw.lines("stdout"))
        for s in secrets:
            self.assertNotIn(s, logs, "a secret or token is in keywayd's log")
            self.assertNotIn(s, metrics)
        needles = [s.encode() for s in secrets]
        for path in Path(self.kw.dir).rglob("*"):
            if not path.is_file() or path.stat().st_size > (1 << 31):
                continue
            data = path.read_bytes()
            for s in needles:
                self.assertNotIn(s, data, "a secret or token in plaintext in %s" % path)


# ================================================================================================
# Fresh daemons: first fetch, offline operation, TTL, keywayctl schemas
# ================================================================================================

class BosaSchemaStoreTest(BosaTestBase):

    def fresh(self, **kw):
        env = BosaEnv(**kw)
        self.addCleanup(env.close)
        self.use_env(env)
        return env

    def test_concurrent_first_requests_make_one_fetch_then_store_serves(self):
        self.fresh(users=("alice",))
        self.fake.discovery_delay = 0.6
        port = self.kw.main_port
        h = "127.0.0.1:%d" % port
        raws = [build_request("GET", t, [], None, host=h) for t in
                ("/bosa/connectors/names", "/bosa/connectors/?modules=github", "/bosa/connectors",
                 "/bosa/connectors/", "/bosa/connectors?modules=twitter", "/bosa/connectors/names")]
        raws += [build_request("POST", "/bosa/connectors/github/create_issue",
                               [("X-API-Key", self.tokens["app-alpha"]), ("Content-Type", "application/json")],
                               json.dumps({"owner": "acme", "repo": "r", "title": "t%d" % i}), host=h)
                 for i in range(4)]
        results = concurrent_requests(port, raws, timeout=30)
        for res in results:
            self.assertNotIsInstance(res, Exception, res)
            self.assertEqual(res.status, 200, res)
        self.assertEqual(results[2].body, self.fake.document_bytes())
        fetches = self.fake.discovery_requests()
        self.assertEqual(len(fetches), 1, fetches)
        self.assertEqual((fetches[0].method, fetches[0].target), ("GET", "/connectors"))
        self.assertEqual(fetches[0].header_all("X-API-Key") + fetches[0].header_all("Authorization"), [])
        self.assertIn("json", fetches[0].header("Accept", ""))
        self.assertEqual(len(self.fake.action_requests("create_issue")), 4)

        self.fake.discovery_delay = 0
        for _ in range(30):
            resp = self.discover("/connectors/?modules=github")
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.header("X-Keyway-Cache"), "HIT", resp)
            self.assertRegex(resp.header("Age", ""), r"^\d+$")
        self.assertEqual(len(self.fake.discovery_requests()), 1)
        self.assertGreaterEqual(self.metric("schema_refreshes", upstream=None), 1)

    def test_offline_after_restart_discovery_and_validation_still_work(self):
        self.fresh(users=("alice",))
        doc_bytes = self.fake.document_bytes()
        self.assertEqual(self.discover("/connectors/names").status, 200)
        self.assertEqual(self.post("github", "create_issue", {"owner": "a", "repo": "b", "title": "c"}).status, 200)

        self.fake.stop()
        self.kw.stop()
        self.kw.start()

        full = self.discover("/connectors")
        self.assertEqual(full.status, 200, full)
        self.assertEqual(full.body, doc_bytes)
        self.assertEqual(self.discover("/connectors/names").json(), ["github", "google_drive", "twitter", "misc"])
        sdk = self.sdk()
        self.assertIn("list_pull_requests", sdk.connect("github").actions)
        resp = self.post("github", "list_pull_requests",
                         {"owner": "bad owner", "repo": "api", "per_page": "x", "state": "merged", "labels": ["a", 1]})
        self.assertInvalid(resp, ["/owner", "/per_page", "/state", "/labels/1"])
        body, status = sdk.execute("github", "create_issue", {"owner": "acme", "repo": "api", "title": "t",
                                                              "kind": "epic"})
        self.assertEqual(status, 422, body)
        self.assertEqual([d["pointer"] for d in body["error"]["details"]], ["/kind"])
        # A valid call cannot be delivered: a keyway error, after the retries.
        started = time.monotonic()
        resp = self.post("github", "create_issue", {"owner": "a", "repo": "b", "title": "c"})
        self.assertKeywayError(resp, 502, "upstream_unreachable")
        self.assertLess(time.monotonic() - started, 10)
        # An unknown connector: the refresh fails, the stored document stays, the answer is empty.
        resp = self.discover("/connectors/?modules=jira")
        self.assertEqual((resp.status, resp.json()), (200, {}))
        self.assertEqual(self.discover("/connectors").body, doc_bytes)

        cp = self.kw.ctl("schemas", "list")
        self.assertIn("github", cp.stdout)
        cp = self.kw.ctl("schemas", "refresh", check=False)
        self.assertEqual(cp.returncode, 2, cp)
        self.assertTrue(cp.stderr.strip(), "no message on stderr")
        self.assertEqual(self.discover("/connectors").body, doc_bytes, "a failed refresh replaced the document")

    def test_nothing_stored_and_upstream_failing_is_503(self):
        self.fresh(users=("alice",))
        self.fake.discovery_failure = Response.json({"error": {"message": "maintenance"}}, status=503)
        for target in ("/connectors/names", "/connectors/?modules=github", "/connectors"):
            with self.subTest(target=target):
                doc = self.assertKeywayError(self.discover(target), 503, "unavailable", "Service Unavailable")
                self.assertIn("bosa", doc["error"]["message"])
        resp = self.post("github", "create_issue", {"owner": "a", "repo": "b", "title": "c"})
        self.assertKeywayError(resp, 503, "unavailable")
        self.assertEqual(self.fake.action_requests(), [])
        with self.assertRaises(GLConnectorError):
            self.sdk().connect("github")
        self.assertGreaterEqual(self.metric("schema_refresh_failures", upstream=None), 1)

        self.fake.discovery_failure = None
        deadline = time.monotonic() + 5
        while True:  # the next request fetches again (a failure is not remembered as "no schemas")
            resp = self.discover("/connectors/names")
            if resp.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.post("github", "create_issue", {"owner": "a", "repo": "b", "title": "c"}).status, 200)
        self.assertEqual(len(self.fake.action_requests()), 1)

    def test_stale_schemas_served_at_once_and_refreshed_in_background(self):
        self.fresh(users=("alice",), bosa={"schema_ttl": "1s"})
        self.assertEqual(self.discover("/connectors/names").json(), ["github", "google_drive", "twitter", "misc"])
        self.assertEqual(len(self.fake.discovery_fetches()), 1)
        doc = self.fake.document
        doc["jira"] = {"create_ticket": {"method": "POST", "path": "/connectors/jira/create_ticket",
                                         "docstring": "Create a ticket.", "parameters": {},
                                         "request_body": {"title": "T", "type": "object",
                                                          "properties": {"summary": {"type": "string"}},
                                                          "required": ["summary"]}}}
        self.fake.set_document(doc)
        time.sleep(1.3)
        self.fake.discovery_delay = 0.5  # the refresh is slow: the stale answer must not wait for it
        started = time.monotonic()
        resp = self.discover("/connectors/names")
        self.assertLess(time.monotonic() - started, 0.4, "a stale document was not served at once")
        self.assertEqual(resp.json(), ["github", "google_drive", "twitter", "misc"])
        deadline = time.monotonic() + 5
        while "jira" not in self.discover("/connectors/names").json() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn("jira", self.discover("/connectors/names").json())
        self.assertEqual(len(self.fake.discovery_fetches()), 2, "more than one background refresh")
        self.assertInvalid(self.post("jira", "create_ticket", {}), ["/summary"])
        self.assertEqual(self.post("jira", "create_ticket", {"summary": "s"}).status, 200)

        # A failing refresh keeps the stored document.
        self.fake.discovery_delay = 0
        self.fake.discovery_failure = Response(503)
        time.sleep(1.3)
        for _ in range(5):
            resp = self.discover("/connectors/names")
            self.assertEqual(resp.status, 200, resp)
            self.assertIn("jira", resp.json())
            time.sleep(0.1)
        self.assertGreaterEqual(len(self.fake.discovery_fetches()), 3)
        self.assertEqual(self.post("jira", "create_ticket", {"summary": "s"}).status, 200)

    def test_keywayctl_schemas_list_and_refresh(self):
        env = self.fresh(users=("alice",), start=False)
        cp = self.kw.ctl("schemas", "list")
        self.assertIn("no schemas stored yet", cp.stdout + cp.stderr)

        cp = self.kw.ctl("schemas", "refresh")
        self.assertTrue(cp.stdout.strip(), "refresh printed no summary")
        fetches = self.fake.discovery_requests()
        self.assertEqual([(r.method, r.target) for r in fetches], [("GET", "/connectors")])
        self.assertEqual(fetches[0].header_all("X-API-Key") + fetches[0].header_all("Authorization"), [])
        cp = self.kw.ctl("schemas", "list")
        for name in ("github", "google_drive", "twitter", "misc"):
            self.assertIn(name, cp.stdout)
        self.assertIn("/misc/odd_action/request_body/properties/remote", cp.stdout)

        # The daemon serves what keywayctl stored, without fetching itself.
        self.kw.start()
        self.assertEqual(self.discover("/connectors").body, self.fake.document_bytes())
        self.assertEqual(len(self.fake.discovery_requests()), 1)

        # One connector: fetched with ?modules= and merged into the stored document.
        doc = self.fake.document
        doc["jira"] = {"create_ticket": {"method": "POST", "path": "/connectors/jira/create_ticket",
                                         "docstring": "Create a ticket.", "parameters": {},
                                         "request_body": {"title": "T", "type": "object",
                                                          "properties": {"summary": {"type": "string"}},
                                                          "required": ["summary"]}}}
        self.fake.set_document(doc)
        self.fake.clear_log()
        self.kw.ctl("schemas", "refresh", "jira")
        self.assertEqual([r.target for r in self.fake.discovery_requests()], ["/connectors/?modules=jira"])
        deadline = time.monotonic() + 3  # the daemon looks at the store's generation once a second
        names = self.discover("/connectors/names").json()
        while "jira" not in names and time.monotonic() < deadline:
            time.sleep(0.1)
            names = self.discover("/connectors/names").json()
        self.assertEqual(sorted(names), ["github", "google_drive", "jira", "misc", "twitter"])
        self.assertInvalid(self.post("jira", "create_ticket", {"summary": 1}), ["/summary"])
        self.assertEqual(self.post("jira", "create_ticket", {"summary": "s"}).status, 200)
        self.assertEqual(len(self.fake.discovery_requests()), 1, "the daemon fetched instead of using the store")

        self.fake.stop()
        cp = self.kw.ctl("schemas", "refresh", check=False)
        self.assertEqual(cp.returncode, 2, cp)
        self.assertTrue(cp.stderr.strip())
        self.assertNotIn(env.client_key, cp.stdout + cp.stderr)
        self.assertIn("jira", self.discover("/connectors/names").json())


if __name__ == "__main__":
    unittest.main()
