"""test_auth.py: client tokens, teams, credential injection and the live credential store (docs/auth.md, docs/cli.md)."""

import time
import uuid

from harness import KeywayTestCase, request


def _uid():
    return uuid.uuid4().hex[:12]


class CredentialInjectionTest(KeywayTestCase):

    def assertNoClientToken(self, r):
        for tok in self.tokens.values():
            self.assertNotIn(tok, r.target)
            for n, v in r.headers:
                self.assertNotIn(tok, v, "client token reached the upstream in %s" % n)
                self.assertNotIn("kw_", v, "a kw_ value reached the upstream in %s" % n)
        self.assertFalse(r.has_header("X-Keyway-Token"))

    def test_bundleup_bearer_injected_from_x_keyway_token(self):
        resp = self.call("GET", "/bundleup-proxy/user/repos")
        self.assertEqual(resp.status, 200, resp)
        r = self.only_request()
        self.assertEqual(r.header_all("Authorization"), ["Bearer " + self.secrets["bundleup"]])
        self.assertNoClientToken(r)

    def test_bundleup_token_in_authorization_bearer(self):
        resp = request(self.port, "GET", "/bundleup-proxy/user", [("Authorization", "Bearer " + self.token())])
        self.assertEqual(resp.status, 200, resp)
        r = self.only_request()
        self.assertEqual(r.header_all("Authorization"), ["Bearer " + self.secrets["bundleup"]])
        self.assertNoClientToken(r)

    def test_client_credential_header_is_replaced_not_forwarded(self):
        resp = self.call("GET", "/bundleup-proxy/user", [("Authorization", "Bearer ghp_provider_token_of_client")])
        self.assertEqual(resp.status, 200, resp)
        r = self.only_request()
        self.assertEqual(r.header_all("Authorization"), ["Bearer " + self.secrets["bundleup"]])

    def test_bundleiq_x_api_key_injected(self):
        resp = self.call("GET", "/bundleiq/v1/notes/" + _uid(), [("X-Api-Key", "placeholder")])
        self.assertEqual(resp.status, 200, resp)
        r = self.only_request()
        self.assertEqual([v for n, v in r.headers if n.lower() == "x-api-key"], [self.secrets["bundleiq"]])
        self.assertFalse(r.has_header("Authorization"))
        self.assertNoClientToken(r)

    def test_bundleiq_token_in_x_api_key(self):
        for spelling in ("X-Api-Key", "X-API-Key", "x-api-key"):
            with self.subTest(header=spelling):
                self.fake.reset()
                resp = request(self.port, "GET", "/bundleiq/v1/workspaces/" + _uid(),
                               [(spelling, self.token("app-iq"))])
                self.assertEqual(resp.status, 200, resp)
                r = self.only_request()
                self.assertEqual(r.header_all("X-Api-Key"), [self.secrets["bundleiq"]])
                self.assertNoClientToken(r)

    def test_x_keyway_token_wins(self):
        # valid X-Keyway-Token + unknown kw_ bearer: the X-Keyway-Token decides -> forwarded
        resp = request(self.port, "GET", "/bundleup-proxy/wins",
                       [("Authorization", "Bearer kw_not_a_real_token_000"), ("X-Keyway-Token", self.token())])
        self.assertEqual(resp.status, 200, resp)
        r = self.only_request()
        self.assertEqual(r.header_all("Authorization"), ["Bearer " + self.secrets["bundleup"]])
        self.assertNoClientToken(r)
        # unknown X-Keyway-Token + valid kw_ bearer: still the X-Keyway-Token decides -> 401
        self.fake.reset()
        resp = request(self.port, "GET", "/bundleup-proxy/wins",
                       [("Authorization", "Bearer " + self.token()), ("X-Keyway-Token", "kw_not_a_real_token_000")])
        self.assertKeywayError(resp, 401, "unauthorized", "Unauthorized")
        self.assertNotForwarded()
        # team decided by X-Keyway-Token: beta's key even though alpha's token is the bearer
        self.fake.reset()
        resp = request(self.port, "GET", "/bundleup-proxy/wins",
                       [("Authorization", "Bearer " + self.token("app-alpha")),
                        ("X-Keyway-Token", self.token("app-beta"))])
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().header_all("Authorization"), ["Bearer " + self.secrets["bundleup@beta"]])

    def test_team_secret_overrides_shared(self):
        self.call("GET", "/bundleup-proxy/team", client="app-beta")
        self.assertEqual(self.only_request().header("Authorization"), "Bearer " + self.secrets["bundleup@beta"])
        self.fake.reset()
        self.call("GET", "/bundleup-proxy/team", client="app-alpha")
        self.assertEqual(self.only_request().header("Authorization"), "Bearer " + self.secrets["bundleup"])
        # beta has no bundleiq override: the shared one applies
        self.fake.reset()
        self.call("GET", "/bundleiq/v1/bundles/" + _uid(), client="app-beta")
        self.assertEqual(self.only_request().header("X-Api-Key"), self.secrets["bundleiq"])

    def test_no_token_401(self):
        resp = request(self.port, "GET", "/bundleup-proxy/x")
        self.assertKeywayError(resp, 401, "unauthorized", "Unauthorized")
        self.assertNotForwarded()

    def test_unknown_token_401(self):
        for hdr in (("X-Keyway-Token", "kw_bogus_bogus_bogus"), ("Authorization", "Bearer kw_bogus_bogus_bogus"),
                    ("X-Keyway-Token", self.token() + "x"), ("X-Keyway-Token", self.token()[:-1]),
                    ("X-Keyway-Token", "not-a-kw-token"), ("X-Keyway-Token", "")):
            with self.subTest(header=hdr[0], n=len(hdr[1])):
                resp = request(self.port, "GET", "/bundleup-proxy/x", [hdr])
                self.assertKeywayError(resp, 401, "unauthorized", "Unauthorized")
        self.assertNotForwarded()

    def test_non_kw_bearer_is_not_a_token(self):
        # A BundleUp bearer that is not a kw_ token authenticates nobody.
        resp = request(self.port, "GET", "/bundleup-proxy/x", [("Authorization", "Bearer sk_live_realkey")])
        self.assertKeywayError(resp, 401, "unauthorized", "Unauthorized")
        self.assertNotForwarded()

    def test_token_as_bearer_where_the_upstream_takes_another_header_says_where(self):
        # BundleIQ takes the client token in X-Api-Key (or X-Keyway-Token), not as a bearer.
        token = self.token("app-iq")
        resp = request(self.port, "GET", "/bundleiq/v1/notes/" + _uid(), [("Authorization", "Bearer " + token)])
        message = self.assertKeywayError(resp, 401, "unauthorized", "Unauthorized")["error"]["message"]
        self.assertIn("upstream 'bundleiq' takes the keyway client token as X-Api-Key: kw_... or "
                      "X-Keyway-Token: kw_...", message)
        self.assertNotIn(token, resp.text)
        self.assertNotForwarded()

    def test_team_without_upstream_403(self):
        resp = self.call("GET", "/bundleup-proxy/x", client="app-iq")
        self.assertKeywayError(resp, 403, "forbidden", "Forbidden")
        self.assertNotForwarded()
        resp = self.call("GET", "/bundleiq/v1/notes/" + _uid(), client="app-iq")
        self.assertEqual(resp.status, 200, resp)

    def test_401_and_403_bodies_carry_no_secret(self):
        for resp in (request(self.port, "GET", "/bundleup-proxy/x", [("X-Keyway-Token", "kw_wrong_wrong")]),
                     self.call("GET", "/bundleup-proxy/x", client="app-iq")):
            raw = resp.body.decode("utf-8", "replace") + repr(resp.headers)
            for v in list(self.secrets.values()) + list(self.tokens.values()) + ["kw_wrong_wrong"]:
                self.assertNotIn(v, raw)

    def test_revoked_client_401_immediately(self):
        token = self.kw.add_client("short-lived", "alpha")
        self.tokens["short-lived"] = token
        resp = self.call("GET", "/bundleup-proxy/live", client="short-lived")
        self.assertEqual(resp.status, 200, "a client added while keywayd runs must work at once: %r" % resp)
        self.kw.revoke_client("short-lived")
        self.fake.reset()
        resp = self.call("GET", "/bundleup-proxy/live", client="short-lived")
        self.assertKeywayError(resp, 401, "unauthorized", "Unauthorized")
        self.assertNotForwarded()
        # and through the SDK-style header as well
        resp = request(self.port, "GET", "/bundleup-proxy/live", [("Authorization", "Bearer " + token)])
        self.assertKeywayError(resp, 401, "unauthorized", "Unauthorized")
        # other clients are unaffected
        self.assertEqual(self.call("GET", "/bundleup-proxy/live").status, 200)

    def test_secret_rotation_visible_without_restart(self):
        new = "rotated-" + _uid()
        self.kw.set_secret("bundleiq.api_key", new, team="alpha")
        try:
            self.call("GET", "/bundleiq/v1/notes/" + _uid())
            self.assertEqual(self.only_request().header("X-Api-Key"), new)
        finally:
            self.kw.ctl("secret", "rm", "bundleiq.api_key", "--team", "alpha")
        self.fake.reset()
        self.call("GET", "/bundleiq/v1/notes/" + _uid())
        self.assertEqual(self.only_request().header("X-Api-Key"), self.secrets["bundleiq"])

    def test_secret_trailing_newline_stripped_once(self):
        # set_secret() sends value + "\n" on stdin: exactly that newline is stripped.
        self.call("GET", "/bundleup-proxy/nl")
        auth = self.only_request().header("Authorization")
        self.assertFalse(auth.endswith("\n") or auth.endswith("\r"))
        self.assertEqual(auth, "Bearer " + self.secrets["bundleup"])


class MissingSecretTest(KeywayTestCase):
    """No secret stored yet: 503 naming the keywayctl command; storing it fixes the running daemon."""

    @classmethod
    def upstreams(cls):
        return {
            "bundleup-proxy": {"base_url": cls.fake.url},
            "extra": {"base_url": cls.fake.url, "protocol": "generic",
                      "credential": {"header": "X-Extra-Key", "prefix": "Token ", "secret": "extra.api_key"}},
        }

    @classmethod
    def provision(cls):
        cls.kw.add_team("alpha")
        cls.kw.add_team("beta")
        cls.tokens = {"app-alpha": cls.kw.add_client("app-alpha", "alpha"),
                      "app-beta": cls.kw.add_client("app-beta", "beta")}
        cls.secrets = {}

    def test_missing_secret_503_names_command_then_set_live(self):
        resp = self.call("GET", "/bundleup-proxy/x")
        doc = self.assertKeywayError(resp, 503, "unavailable", "Service Unavailable")
        self.assertIn("keywayctl secret set bundleup.api_key", doc["error"]["message"])
        self.assertNotForwarded()
        value = "late-" + _uid()
        self.kw.set_secret("bundleup.api_key", value)
        self.fake.reset()
        resp = self.call("GET", "/bundleup-proxy/x")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().header("Authorization"), "Bearer " + value)

    def test_generic_upstream_credential_config(self):
        resp = self.call("GET", "/extra/thing")
        doc = self.assertKeywayError(resp, 503, "unavailable")
        self.assertIn("keywayctl secret set extra.api_key", doc["error"]["message"])
        self.assertNotForwarded()
        # a team-scoped secret serves that team only
        value = "extra-" + _uid()
        self.kw.set_secret("extra.api_key", value, team="alpha")
        self.fake.reset()
        resp = self.call("GET", "/extra/thing", [("X-Extra-Key", "client-sent")])
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(self.only_request().header_all("X-Extra-Key"), ["Token " + value])
        self.fake.reset()
        resp = self.call("GET", "/extra/thing", client="app-beta")
        self.assertKeywayError(resp, 503, "unavailable")
        self.assertNotForwarded()
