"""test_isolation.py: what one caller must never get of another's, probed from outside (docs/isolation.md):
the cache-key rule (cached answers never cross users, teams, keys or views), the token rule (a kw_ client
token never leaves the host) and the validation rule (no spelling of a BOSA action path skips validation;
a minted user token only goes with routes keyway recognises). Each test asserts on what the client got,
on what the fake upstream received, and on metrics."""

import base64
import json
import re
import sys
import unittest
import uuid

from harness import REPO, KeywayTestCase, RawConnection, Response, request

sys.path.insert(0, str(REPO / "tests" / "fakes"))

from test_bosa import BosaEnv  # noqa: E402  (a helper class, not a TestCase)


def _uid():
    return uuid.uuid4().hex[:10]


def _metric(kw, name, labels=""):
    body = request(kw.main_port, "GET", "/_keyway/metrics").text
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), body, re.M)
    return float(m.group(1)) if m else 0.0


class _BosaIsolationBase(unittest.TestCase):
    """One FakeBosa and one keywayd with users alice and bob granted to team alpha (over TLS when
    the class says TLS = True)."""

    env = None
    TLS = False

    @classmethod
    def setUpClass(cls):
        cls.env = BosaEnv(users=("alice", "bob"), tls=cls.TLS)
        cls.addClassCleanup(cls.env.close)

    def setUp(self):
        self.env.fake.clear_log()

    def tearDown(self):
        for r in self.env.fake.requests if self.TLS else ():
            self.assertIsNotNone(r.tls, "a request reached the fake without TLS: %r" % r)

    @property
    def port(self):
        return self.env.kw.main_port

    def jwt(self, user):
        """A user token minted at the fake directly (an app that authenticates its users itself)."""
        r = self.env.fake_request("POST", "/auth/tokens",
                                  [("X-API-Key", self.env.client_key), ("Content-Type", "application/json")],
                                  json.dumps({"identifier": user, "secret": self.env.user_secrets[user]}))
        self.assertEqual(r.status, 200, r)
        return r.json()["data"]["token"]

    def post(self, path, body, client="app-alpha", headers=None):
        hdrs = [("X-API-Key", self.env.tokens[client]), ("Content-Type", "application/json")]
        hdrs += list(headers or [])
        return request(self.port, "POST", "/bosa" + path, hdrs, json.dumps(body))


class BosaCacheIdentityTest(_BosaIsolationBase):
    """The cache-key rule on BOSA: a passed-through bearer is part of the identity."""

    def test_cached_list_never_crosses_passed_through_users(self):
        body = {"owner": "acme", "repo": "r" + _uid()}
        path = "/connectors/github/list_pull_requests"
        alice, bob = self.jwt("alice"), self.jwt("bob")

        r = self.post(path, body, "app-alpha", [("Authorization", "Bearer " + alice)])
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
        self.assertEqual({i["user"] for i in r.json()["data"]}, {"alice"})

        # Another team, another user's JWT: never alice's entry.
        r = self.post(path, body, "app-beta", [("Authorization", "Bearer " + bob)])
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
        self.assertEqual({i["user"] for i in r.json()["data"]}, {"bob"})

        # No user at all: not alice's entry either.
        r = self.post(path, body, "app-beta")
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
        self.assertEqual({i["user"] for i in r.json()["data"]}, {None})

        # Bob's own JWT from alice's team's app: bob's entry (both teams inject the same shared
        # key, so they share entries per user), never alice's.
        r = self.post(path, body, "app-alpha", [("Authorization", "Bearer " + bob)])
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "HIT"), r)
        self.assertEqual({i["user"] for i in r.json()["data"]}, {"bob"})

        # Caching still works per identity: alice again is a HIT with her own data.
        r = self.post(path, body, "app-alpha", [("Authorization", "Bearer " + alice)])
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "HIT"), r)
        self.assertEqual({i["user"] for i in r.json()["data"]}, {"alice"})

        seen = [self.env.fake.user_of(q) for q in self.env.fake.action_requests("list_pull_requests")]
        self.assertEqual(sorted(seen, key=str), sorted(["alice", "bob", None], key=str))

    def test_connection_named_view_header_does_not_poison_the_cache(self):
        # X-Bosa-Integration named in Connection is dropped (hop-by-hop): the entry must be keyed as
        # a request without it, and a genuine one must not be served that entry.
        body = {"owner": "acme", "repo": "r" + _uid()}
        path = "/connectors/github/list_pull_requests"
        r = self.post(path, body, headers=[("Authorization", "Bearer kwu_alice"), ("X-Bosa-Integration", "octo"),
                                           ("Connection", "X-Bosa-Integration")])
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
        first = self.env.fake.action_requests("list_pull_requests")[-1]
        self.assertIsNone(first.header("X-Bosa-Integration"))
        r = self.post(path, body, headers=[("Authorization", "Bearer kwu_alice"), ("X-Bosa-Integration", "octo")])
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
        self.assertEqual(self.env.fake.action_requests("list_pull_requests")[-1].header("X-Bosa-Integration"), "octo")
        # ...and the request without the header now hits the entry stored for it.
        r = self.post(path, body, headers=[("Authorization", "Bearer kwu_alice")])
        self.assertEqual(r.header("X-Keyway-Cache"), "HIT", r)
        self.assertEqual(len(self.env.fake.action_requests("list_pull_requests")), 2)


class BosaValidationRuleTest(_BosaIsolationBase):
    """The validation rule: every spelling BOSA would route to an action is validated or refused."""

    INVALID = {"owner": "acme", "repo": "api", "title": ""}  # title: minLength 1

    def test_non_canonical_action_paths_are_refused_and_never_forwarded(self):
        before = _metric(self.env.kw, "keyway_rejected_requests_total")
        variants = ["/connectors/github/create_issue/", "/connectors//github/create_issue",
                    "/connectors/github//create_issue", "/connectors/github/create%5Fissue",
                    "/connectors/github%2Fcreate_issue", "/connectors/github/create_issue//"]
        for path in variants:
            with self.subTest(path=path):
                r = self.post(path, self.INVALID, headers=[("Authorization", "Bearer kwu_alice")])
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.json()["error"]["code"], "bad_request")
                self.assertIn("/connectors/github/create_issue", r.json()["error"]["message"])
                # A valid body is refused the same way: the spelling, not the body, is the problem.
                r = self.post(path, {"owner": "acme", "repo": "api", "title": "t"})
                self.assertEqual(r.status, 400, r)
        self.assertEqual(self.env.fake.action_requests(), [])
        self.assertEqual(self.env.fake.mint_requests(), [])
        self.assertEqual(_metric(self.env.kw, "keyway_rejected_requests_total") - before, 2 * len(variants))
        # The canonical spelling is validated (422, nothing sent) and, when valid, forwarded.
        r = self.post("/connectors/github/create_issue", self.INVALID, headers=[("Authorization", "Bearer kwu_alice")])
        self.assertEqual(r.status, 422, r)
        self.assertEqual(self.env.fake.action_requests(), [])
        r = self.post("/connectors/github/create_issue", {"owner": "acme", "repo": "api", "title": "t"},
                      headers=[("Authorization", "Bearer kwu_alice")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.env.fake.action_requests("create_issue")), 1)

    def test_user_token_only_on_recognised_routes(self):
        for method, path in (("GET", "/connectors//github/integrations"), ("POST", "/github/mcp"),
                             ("GET", "/users/me/"), ("GET", "/something/else")):
            with self.subTest(path=path):
                r = request(self.port, method, "/bosa" + path,
                            [("X-API-Key", self.env.tokens["app-alpha"]), ("Authorization", "Bearer kwu_alice")],
                            b"{}" if method == "POST" else None)
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.json()["error"]["code"], "bad_request")
        self.assertEqual(self.env.fake.requests, [])
        # Without a user handle such paths are forwarded with the client key only.
        r = request(self.port, "GET", "/bosa/something/else", [("X-API-Key", self.env.tokens["app-alpha"])])
        self.assertEqual(r.status, 404, r)  # the fake's own answer
        self.assertIsNone(self.env.fake.requests[-1].header("Authorization"))
        # Recognised routes get the minted token.
        r = request(self.port, "GET", "/bosa/users/me",
                    [("X-API-Key", self.env.tokens["app-alpha"]), ("Authorization", "Bearer kwu_alice")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.env.fake.user_of(self.env.fake.requests[-1]), "alice")

    def test_two_different_user_handles_are_refused(self):
        r = self.post("/connectors/github/list_pull_requests", {"owner": "a", "repo": "b"},
                      headers=[("Authorization", "Bearer kwu_alice"), ("Authorization", "Bearer kwu_bob")])
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.env.fake.requests, [])


class BosaTokenRuleTest(_BosaIsolationBase):
    def test_kw_tokens_in_authorization_never_reach_bosa(self):
        token = self.env.tokens["app-alpha"]
        alice = self.jwt("alice")
        before = _metric(self.env.kw, "keyway_client_tokens_withheld_total")
        body = {"owner": "acme", "repo": "api", "title": "t"}
        # A user's JWT followed by a second Authorization with the client token: only the JWT goes.
        r = self.post("/connectors/github/create_issue", body,
                      headers=[("Authorization", "Bearer " + alice), ("Authorization", "Bearer " + token)])
        self.assertEqual(r.status, 200, r)
        got = self.env.fake.action_requests("create_issue")[-1]
        self.assertEqual(got.header_all("Authorization"), ["Bearer " + alice])
        # Basic with the token, raw or base64-encoded: withheld.
        for auth in ("Basic " + token, "Basic " + base64.b64encode(("x:" + token).encode()).decode()):
            with self.subTest(auth=auth[:12]):
                r = self.post("/connectors/github/create_issue", body, headers=[("Authorization", auth)])
                self.assertEqual(r.status, 200, r)
                self.assertEqual(self.env.fake.action_requests("create_issue")[-1].header_all("Authorization"), [])
        self.assertEqual(_metric(self.env.kw, "keyway_client_tokens_withheld_total") - before, 3)
        for q in self.env.fake.requests:
            for name, value in q.headers:
                self.assertNotIn("kw_", value, "%s reached the upstream" % name)


class TokenRuleTest(KeywayTestCase):
    """The token rule on BundleUp and BundleIQ: whatever header carries a kw_ token, it stays home."""

    def assertNoClientToken(self, req):
        for name, value in req.headers:
            for t in self.tokens.values():
                self.assertNotIn(t, value, "client token in %s" % name)
            self.assertNotIn("kw_", value, "something token-shaped in %s" % name)

    def test_tokens_in_any_header_are_withheld(self):
        alpha, iq = self.token("app-alpha"), self.token("app-iq")
        before = _metric(self.kw, "keyway_client_tokens_withheld_total")
        cases = [
            # (upstream path, headers): the first header authenticates, the rest must not go upstream
            ("/bundleup-api/v1/connections", [("Authorization", "Bearer " + alpha), ("X-Api-Key", alpha)]),
            ("/bundleiq/v1/notes", [("X-Keyway-Token", iq), ("Authorization", "Bearer " + iq)]),
            ("/bundleup-proxy/x", [("X-Keyway-Token", alpha), ("Cookie", "sid=1; tok=" + alpha)]),
            ("/bundleup-proxy/x", [("X-Keyway-Token", alpha), ("X-Forwarded-Authorization", "Token " + alpha)]),
            ("/bundleup-proxy/x", [("X-Keyway-Token", alpha), ("X-Custom", "kw%5F" + alpha[3:])]),
        ]
        for path, headers in cases:
            with self.subTest(path=path, header=headers[1][0]):
                self.fake.reset()
                r = request(self.port, "GET", path, headers + [("X-Trace", "t1")])
                self.assertEqual(r.status, 200, r)
                got = self.only_request()
                self.assertNoClientToken(got)
                self.assertEqual(got.header("X-Trace"), "t1")  # the rest passes through
        self.assertEqual(_metric(self.kw, "keyway_client_tokens_withheld_total") - before, len(cases))

    def test_token_in_the_target_is_refused(self):
        alpha = self.token("app-alpha")
        for target in ("/bundleup-api/v1/connections?api_key=" + alpha,
                       "/bundleup-proxy/x?t=kw%5F" + alpha[3:],
                       "/bundleup-proxy/" + alpha + "/x"):
            with self.subTest(target=target[:40]):
                r = self.call("GET", target)
                self.assertKeywayError(r, 400, "bad_request")
                self.assertNotIn(alpha, r.text)
        self.assertNotForwarded()


class CacheIdentityTest(KeywayTestCase):
    """The cache-key rule on BundleUp: which key value was injected, and the request as forwarded."""

    def test_rotated_key_never_serves_the_old_accounts_entries(self):
        path = "/bundleup-api/v1/connections?probe=" + _uid()
        r = self.call("GET", path)
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
        self.assertEqual(self.only_request().header("Authorization"), "Bearer " + self.secrets["bundleup"])
        self.assertEqual(self.call("GET", path).header("X-Keyway-Cache"), "HIT")

        account_b = "bu-account-b-" + _uid()
        old = self.secrets["bundleup"]
        try:
            self.kw.set_secret("bundleup.api_key", account_b)
            self.fake.reset()
            r = self.call("GET", path)
            self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
            self.assertEqual(self.only_request().header("Authorization"), "Bearer " + account_b)
            # Rotating back reaches the first entry again (same value, same fingerprint).
            self.kw.set_secret("bundleup.api_key", old)
            self.fake.reset()
            self.assertEqual(self.call("GET", path).header("X-Keyway-Cache"), "HIT")
            self.assertEqual(self.fake.requests, [])
        finally:
            self.kw.set_secret("bundleup.api_key", old)

    def test_connection_named_header_does_not_poison_the_cache(self):
        path = "/bundleup-api/v1/connections?probe=" + _uid()
        # BU-Include-Raw named in Connection: dropped on the way up, so keyed as absent.
        r = self.call("GET", path, [("BU-Include-Raw", "true"), ("Connection", "BU-Include-Raw")])
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
        self.assertIsNone(self.only_request().header("BU-Include-Raw"))
        self.fake.reset()
        r = self.call("GET", path, [("BU-Include-Raw", "true")])
        self.assertEqual((r.status, r.header("X-Keyway-Cache")), (200, "MISS"), r)
        self.assertEqual(self.only_request().header("BU-Include-Raw"), "true")
        self.fake.reset()
        self.assertEqual(self.call("GET", path).header("X-Keyway-Cache"), "HIT")
        self.assertEqual(self.call("GET", path, [("BU-Include-Raw", "true")]).header("X-Keyway-Cache"), "HIT")
        self.assertEqual(self.fake.requests, [])

    def test_passed_through_credentials_separate_entries(self):
        # On BundleUp the injected key is Authorization; an X-Api-Key the client adds passes through
        # and may select another account upstream: part of the identity.
        marker = "connections-" + _uid()
        self.fake.route("GET", "/v1/connections", Response.json({"data": [marker]}))
        path = "/bundleup-api/v1/connections?probe=" + _uid()
        secret_value = "acct-" + _uid()
        self.assertEqual(self.call("GET", path, [("X-Api-Key", secret_value)]).header("X-Keyway-Cache"), "MISS")
        self.assertEqual(self.call("GET", path, [("X-Api-Key", "acct-2")]).header("X-Keyway-Cache"), "MISS")
        self.assertEqual(self.call("GET", path).header("X-Keyway-Cache"), "MISS")
        self.assertEqual(self.call("GET", path, [("X-Api-Key", secret_value)]).header("X-Keyway-Cache"), "HIT")
        self.assertEqual(len(self.fake.requests), 3)
        # The passed-through value is in the identity as a keyed hash only: the cache file holds the
        # stored body (positive control) but not the value.
        data = b"".join(p.read_bytes() for p in (self.kw.state_dir / "cache").glob("*.mdb"))
        self.assertIn(marker.encode(), data)
        self.assertNotIn(secret_value.encode(), data)


class HostHeaderTest(KeywayTestCase):
    def test_http11_without_host_is_400(self):
        with RawConnection(self.port) as c:
            r = c.request("GET", "/bundleup-proxy/x", [("X-Keyway-Token", self.token())], host=False)
        self.assertKeywayError(r, 400, "bad_request")
        self.assertIn("Host", r.json()["error"]["message"])
        with RawConnection(self.port) as c:
            r = c.request("GET", "/bundleup-proxy/x", [("X-Keyway-Token", self.token()), ("Host", "a b")], host=False)
        self.assertKeywayError(r, 400, "bad_request")
        # HTTP/1.0 predates Host and keeps working without it.
        with RawConnection(self.port) as c:
            r = c.request("GET", "/bundleup-proxy/x", [("X-Keyway-Token", self.token())], version="HTTP/1.0",
                          host=False)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(self.fake.requests), 1)


# The same probes with every upstream behind TLS (a certificate of the test CA, `tls: {ca_file}`):
# isolation must not depend on the transport.

class TlsBosaCacheIdentityTest(BosaCacheIdentityTest):
    TLS = True


class TlsBosaValidationRuleTest(BosaValidationRuleTest):
    TLS = True


class TlsBosaTokenRuleTest(BosaTokenRuleTest):
    TLS = True


class TlsTokenRuleTest(TokenRuleTest):
    TLS = True


class TlsCacheIdentityTest(CacheIdentityTest):
    TLS = True


class TlsHostHeaderTest(HostHeaderTest):
    TLS = True


if __name__ == "__main__":
    unittest.main()
