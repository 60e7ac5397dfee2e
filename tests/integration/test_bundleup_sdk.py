"""test_bundleup_sdk.py: BundleUp SDK-shaped traffic through the compat listeners (docs/http.md):
the exact requests the official Python SDK (requests) sends, with the kw_ token as its
"API key", must reach the upstream with only Authorization replaced and come back unchanged."""

import json

from harness import KeywayTestCase, RawConnection, Response


def _sdk_json(obj):
    # requests' json= encoding: json.dumps defaults (", " and ": " separators), UTF-8
    return json.dumps(obj).encode("utf-8")


class BundleUpSdkTest(KeywayTestCase):
    """Each call: (method, target, connection id or None, JSON body or None, upstream answer)."""

    API_CALLS = [
        ("GET", "/v1/connections/", None, None,
         Response.json({"data": [{"id": "conn_1", "externalId": "u1", "isValid": True}]})),
        ("GET", "/v1/connections?offset=0&limit=50&integration_id=int_gh", None, None,
         Response.json([{"id": "conn_1"}])),
        ("GET", "/v1/connections/conn_abc", None, None, Response.json({"id": "conn_abc"})),
        ("DELETE", "/v1/connections/conn_abc", None, None, Response(204)),
        ("GET", "/v1/integrations?offset=0&limit=10&status=active", None, None,
         Response.json([{"id": "int_gh", "identifier": "github"}])),
        ("POST", "/v1/webhooks", None,
         {"name": "hook", "url": "https://example.com/hook", "events": {"connection.created": True}},
         Response.json({"id": "wh_1", "name": "hook"}, status=201)),
        ("PUT", "/v1/webhooks/wh_1", None, {"name": "renamed"}, Response.json({"id": "wh_1", "name": "renamed"})),
        ("PATCH", "/v1/webhooks/wh_1", None, {"events": {"connection.deleted": True}},
         Response.json({"id": "wh_1"})),
        ("DELETE", "/v1/webhooks/wh_1", None, None, Response(204)),
        ("POST", "/v1/connections", None, {"integrationId": "int_gh", "authToken": "gho_provider", "externalId": "u2"},
         Response.json({"id": "conn_new"}, status=201)),
    ]
    PROXY_CALLS = [
        ("GET", "/user/repos?per_page=5&sort=updated", "conn_gh_1", None,
         Response.json([{"full_name": "acme/api"}], headers=[("X-RateLimit-Remaining", "4999")])),
        ("POST", "/repos/acme/api/issues", "conn_gh_1", {"title": "Bug", "body": "It broke \u2013 badly"},
         Response.json({"number": 7}, status=201)),
        ("PATCH", "/repos/acme/api/issues/7", "conn_gh_1", {"state": "closed"}, Response.json({"number": 7})),
        ("DELETE", "/repos/acme/api/issues/7/labels/bug", "conn_gh_1", None, Response(204)),
        ("GET", "/rate-limited", "conn_gh_1", None,
         Response(429, headers=[("Retry-After", "30"), ("Content-Type", "application/json")],
                  body=b'{"code":"rate_limit","message":"Too many requests"}')),
        ("GET", "/bad-connection", "conn_expired", None,
         Response(400, headers=[("Content-Type", "application/json")],
                  body=b'{"code":"connection_invalid","message":"Missing or invalid connection ID"}')),
    ]
    UNIFY_CALLS = [
        ("GET", "/v1/chat/channels?limit=100&include_raw=false", "conn_slack", None,
         Response.json({"data": [{"id": "C1", "name": "general"}], "metadata": {"next": None}})),
        ("GET", "/v1/git/repos/acme%2Fapi/pulls?limit=100&after=cur_1&include_raw=false", "conn_gh_1", None,
         Response.json({"data": [{"number": 1}], "metadata": {"next": "cur_2"}})),
        ("POST", "/v1/chat/channels/C123/message", "conn_slack", {"text": "hello *world*"},
         Response.json({"data": {"ts": "1.2"}})),
        ("GET", "/v1/calendar/events?starts_after=2026-01-01T00%3A00%3A00Z&starts_before=2026-02-01T00%3A00%3A00Z"
                "&limit=100", "conn_cal", None, Response.json({"data": [], "metadata": {"next": None}})),
        ("GET", "/v1/me?include_raw=true", "conn_gh_1", None, Response.json({"data": {"id": "u"}, "_raw": {}})),
        ("GET", "/chat/channels?limit=100", "conn_slack", None, Response.json({"data": []})),  # Python 0.1.0
    ]

    def _run(self, upstream, calls, extra_headers=()):
        port = self.kw.compat_ports.get(upstream)
        self.assertTrue(port, "no compat listener for %s" % upstream)
        real = "Bearer " + self.secrets["bundleup"]
        conn = None  # one kept-alive connection, like a requests.Session; reopened after a failure
        try:
            for method, target, conn_id, body, answer in calls:
                with self.subTest(method=method, target=target):
                    self.fake.reset()
                    self.fake.route(method, target, answer)
                    hdrs = [("User-Agent", "python-requests/2.31.0"), ("Accept-Encoding", "gzip, deflate"),
                            ("Accept", "*/*"), ("Connection", "keep-alive"),
                            ("Authorization", "Bearer " + self.token()), ("Content-Type", "application/json")]
                    if conn_id:
                        hdrs.append(("BU-Connection-Id", conn_id))
                    hdrs += list(extra_headers)
                    raw_body = _sdk_json(body) if body is not None else None
                    if raw_body is None and method not in ("GET", "HEAD"):
                        hdrs.append(("Content-Length", "0"))  # what requests sends for an empty DELETE
                    if conn is None or conn.peer_closed(0):
                        if conn is not None:
                            conn.close()
                        conn = RawConnection(port, timeout=10)
                    try:
                        resp = conn.request(method, target, hdrs, raw_body)
                    except (OSError, ValueError):
                        conn.close()
                        conn = None
                        raise

                    self.assertEqual((resp.status, resp.reason), (answer.status, answer.reason), resp)
                    self.assertEqual(resp.body, answer.body if answer.status != 204 else b"")
                    for n, v in answer.headers:
                        self.assertEqual(resp.header(n), v, n)

                    r = self.only_request()
                    self.assertEqual((r.method, r.target), (method, target))
                    self.assertEqual(r.body, raw_body or b"")
                    self.assertEqual(r.header_all("Authorization"), [real])
                    self.assertEqual(r.header_all("Content-Type"), ["application/json"])
                    self.assertEqual(r.header("User-Agent"), "python-requests/2.31.0")
                    self.assertEqual(r.header("Accept"), "*/*")
                    self.assertEqual(r.header_all("BU-Connection-Id"), [conn_id] if conn_id else [])
                    for n, v in extra_headers:
                        self.assertEqual(r.header(n), v)
                    for n, v in r.headers:
                        self.assertNotIn(self.token(), v)
                    self.assertNotIn(self.token(), r.target)
        finally:
            if conn is not None:
                conn.close()

    def test_platform_api(self):
        self._run("bundleup-api", self.API_CALLS)

    def test_proxy_api(self):
        self._run("bundleup-proxy", self.PROXY_CALLS)

    def test_unify_api(self):
        self._run("bundleup-unify", self.UNIFY_CALLS)

    def test_unify_include_raw_header_form(self):
        # JS 0.0.x / Ruby 0.1.1 send BU-Include-Raw as a header instead of the query parameter.
        self._run("bundleup-unify", [
            ("GET", "/v1/git/repos?limit=100", "conn_gh_1", None, Response.json({"data": [], "_raw": []})),
        ], extra_headers=[("BU-Include-Raw", "true")])

    def test_python_sdk_via_main_listener_prefix(self):
        # Python 0.1.0 keeps a path prefix in its base URL: the main listener works for it too.
        self.fake.route("GET", "/v1/webhooks", Response.json({"data": []}))
        resp = self.call("GET", "/bundleup-api/v1/webhooks?offset=0&limit=10", client=None,
                         headers=[("Authorization", "Bearer " + self.token()), ("Content-Type", "application/json")])
        self.assertEqual(resp.status, 200, resp)
        r = self.only_request()
        self.assertEqual(r.target, "/v1/webhooks?offset=0&limit=10")
        self.assertEqual(r.header_all("Authorization"), ["Bearer " + self.secrets["bundleup"]])
