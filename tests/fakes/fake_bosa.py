#!/usr/bin/env python3
"""fake_bosa.py: a fake BOSA (GL Connectors) server for keyway's integration tests (docs/bosa.md).

Built on fake_upstream.FakeUpstream (raw sockets, every request recorded byte for byte: method, raw
target, headers in order, body). Python 3 stdlib only. What it serves:

  GET  /connectors, /connectors/, /connectors[/]?modules=a[,b]   the discovery document (pydantic-shaped
                                                                  schemas), no auth; fetches counted
  GET  /connectors/names                                          connector names, document order
  POST /auth/tokens      X-API-Key + {"identifier","secret"} -> a JWT-looking token, lifetime per user
  POST /users, GET /users/me
  GET  /connectors/{app}/integration-exists, POST /connectors/{app}/integrations,
  GET|POST|DELETE /connectors/{app}/integrations/{user_identifier}
  POST /connectors/{app}/{action}   the actions of the document: cursor and page pagination, a file
                                    upload echoing its parts, a file download, a body without
                                    Content-Type, an echo for everything else

Every authenticated route wants X-API-Key == client_key (else 401); a bearer must be a token this fake
minted (not expired, not revoked) or one of `external_tokens` (else 401). Scripted failures per action
(`script()`): any Response, plus FakeBosa.reset_response() (TCP reset after part of the answer),
cut_short() (connection closed mid-body), and refuse_for(seconds) (the port refuses connections).

    fake = FakeBosa(client_key="sk-client-...", users={"alice": "sk-user-..."}).start()
    fake.url; fake.discovery_fetches(); fake.mints("alice"); fake.action_requests("create_issue")
    fake.script("list_issues", Response.json({...}, status=503), times=2)
    fake.stop()

TLS: FakeBosa(..., ssl_context=tls_ca.test_pki().server_context()) serves https:// (see
fake_upstream.py); every RecordedRequest then carries its connection's `tls` facts.

Thread-safety: every public method may be called from any thread.
"""

import base64
import copy
import datetime
import email.parser
import email.policy
import hashlib
import hmac
import json
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_upstream import FakeUpstream, RecordedRequest, Response  # noqa: E402,F401

__all__ = ["FakeBosa", "Response", "RecordedRequest", "default_document", "DISCOVERY_PREFIXES"]

# Endpoint keys that are not actions (docs/bosa.md).
NON_ACTION_PREFIXES = ("integrations", "integration-exists", "success-authorize-callback")
DISCOVERY_PREFIXES = ("/connectors?", "/connectors/?")


# ------------------------------------------------------------------------------------------------
# The discovery document
# ------------------------------------------------------------------------------------------------

def _opt(schema, default=None, **extra):
    """pydantic's Optional[X] = None: anyOf with null."""
    out = {"anyOf": [schema, {"type": "null"}], "default": default}
    out.update(extra)
    return out


def _action(app, name, doc, request_body, sdk_properties, method="POST"):
    """One endpoint entry as the server emits it: request_body is pydantic's model_json_schema()
    ($ref/$defs kept); parameters.request.schema is the inlined form the SDK can read (every anyOf
    member typed, no $ref)."""
    return {
        "method": method,
        "path": "/connectors/%s/%s" % (app, name),
        "docstring": doc,
        "parameters": {"request": {"schema": {"type": "object", "properties": sdk_properties}}},
        "request_body": request_body,
        "response": {"title": "ActionResponse", "type": "object"},
    }


def _github():
    owner = {"type": "string", "title": "Owner", "minLength": 1, "maxLength": 39,
             "pattern": "^[A-Za-z0-9][A-Za-z0-9-]*$"}
    repo = {"type": "string", "title": "Repo", "minLength": 1, "maxLength": 100}
    state_enum = ["open", "closed", "all"]
    filter_def = {
        "title": "ResponseFilter", "type": "object",
        "properties": {
            "field_name": {"type": "string", "minLength": 1, "title": "Field Name"},
            "type": {"type": "string", "title": "Type",
                     "enum": ["string", "string_list", "number", "number_list", "number_range", "date_range"]},
            "value": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}], "default": None},
            "ignore_case": {"type": "boolean", "default": True, "title": "Ignore Case"},
        },
        "required": ["field_name", "type"],
    }
    filter_inline = copy.deepcopy(filter_def)
    del filter_inline["title"]

    list_prs_body = {
        "title": "ListPullRequestsRequest", "type": "object",
        "properties": {
            "owner": owner, "repo": repo,
            "state": {"$ref": "#/$defs/PullRequestState", "default": "open"},
            "per_page": _opt({"type": "integer", "minimum": 1, "maximum": 100}, title="Per Page"),
            "cursor": _opt({"type": "string"}, title="Cursor"),
            "labels": _opt({"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 10}),
            "response_fields": _opt({"type": "array", "items": {"type": "string"}}),
            "response_filters": _opt({"type": "array", "items": {"$ref": "#/$defs/ResponseFilter"}}),
        },
        "required": ["owner", "repo"],
        "$defs": {
            "PullRequestState": {"title": "PullRequestState", "type": "string", "enum": state_enum},
            "ResponseFilter": filter_def,
        },
    }
    list_prs_sdk = {
        "owner": owner, "repo": repo,
        "state": _opt({"type": "string", "enum": state_enum}),
        "per_page": _opt({"type": "integer"}), "cursor": _opt({"type": "string"}),
        "labels": _opt({"type": "array", "items": {"type": "string"}}),
        "response_fields": _opt({"type": "array", "items": {"type": "string"}}),
        "response_filters": _opt({"type": "array", "items": filter_inline}),
    }

    issue_meta = {
        "title": "IssueMetadata", "type": "object",
        "properties": {
            "priority": {"type": "integer", "minimum": 1, "maximum": 5, "title": "Priority"},
            "estimate": _opt({"type": "number", "exclusiveMinimum": 0}),
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "default": []},
        },
        "required": ["priority"],
    }
    create_issue_body = {
        "title": "CreateIssueRequest", "type": "object",
        "properties": {
            "owner": owner, "repo": repo,
            "title": {"type": "string", "minLength": 1, "maxLength": 256, "title": "Title"},
            "body": _opt({"type": "string"}),
            "kind": {"const": "issue", "type": "string", "default": "issue", "title": "Kind"},
            "labels": _opt({"type": "array", "items": {"type": "string"}}),
            "assignees": _opt({"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9-]+$"}}),
            "milestone": _opt({"type": "integer", "minimum": 1}),
            "metadata": {"anyOf": [{"$ref": "#/$defs/IssueMetadata"}, {"type": "null"}], "default": None},
        },
        "required": ["owner", "repo", "title"],
        "$defs": {"IssueMetadata": issue_meta},
    }
    meta_inline = copy.deepcopy(issue_meta)
    del meta_inline["title"]
    create_issue_sdk = {
        "owner": owner, "repo": repo,
        "title": {"type": "string"}, "body": _opt({"type": "string"}),
        "kind": _opt({"type": "string"}),
        "labels": _opt({"type": "array", "items": {"type": "string"}}),
        "assignees": _opt({"type": "array", "items": {"type": "string"}}),
        "milestone": _opt({"type": "integer"}),
        "metadata": _opt(meta_inline),
    }

    list_issues_body = {
        "title": "ListIssuesRequest", "type": "object",
        "properties": {"owner": owner, "repo": repo,
                       "state": {"type": "string", "enum": state_enum, "default": "open"},
                       "page": _opt({"type": "integer", "minimum": 1})},
        "required": ["owner", "repo"],
    }
    list_issues_sdk = {"owner": owner, "repo": repo, "state": _opt({"type": "string"}),
                       "page": _opt({"type": "integer"})}

    search_body = {
        "title": "SearchCommitsRequest", "type": "object",
        "properties": {"query": {"type": "string", "minLength": 1, "title": "Query"},
                       "page": _opt({"type": "integer", "minimum": 1}),
                       "limit": _opt({"type": "integer", "minimum": 1, "maximum": 50})},
        "required": ["query"],
    }
    search_sdk = {"query": {"type": "string"}, "page": _opt({"type": "integer"}),
                  "limit": _opt({"type": "integer"})}

    blob_body = {"title": "GetRawBlobRequest", "type": "object",
                 "properties": {"sha": {"type": "string", "pattern": "^[0-9a-f]{7,40}$"}},
                 "required": ["sha"]}

    g = "github"
    return {
        "list_pull_requests": _action(g, "list_pull_requests", "List pull requests of a repository.",
                                      list_prs_body, list_prs_sdk),
        "create_issue": _action(g, "create_issue", "Create an issue.", create_issue_body, create_issue_sdk),
        "list_issues": _action(g, "list_issues", "List issues.", list_issues_body, list_issues_sdk),
        "search_commits": _action(g, "search_commits", "Search commits.", search_body, search_sdk),
        "get_raw_blob": _action(g, "get_raw_blob", "A blob's raw bytes.", blob_body, {"sha": {"type": "string"}}),
        "integrations": {"method": "POST", "path": "/connectors/github/integrations",
                         "docstring": "Start an integration.", "parameters": {}},
        "integration-exists": {"method": "GET", "path": "/connectors/github/integration-exists",
                               "docstring": "Whether the user has an integration.", "parameters": {}},
        "success-authorize-callback": {"method": "GET", "path": "/connectors/github/success-authorize-callback",
                                       "docstring": "OAuth callback.", "parameters": {}},
        "get_rate_limit": {"method": "GET", "path": "/connectors/github/get_rate_limit",
                           "docstring": "Not an action: GET.", "parameters": {}},
    }


def _google_drive():
    upload_body = {
        "title": "UploadFileRequest", "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary", "title": "File"},
            "folder_id": _opt({"type": "string", "minLength": 1}),
            "overwrite": {"type": "boolean", "default": False},
            "chunk_size": _opt({"type": "integer", "minimum": 1}),
            "tags": _opt({"type": "array", "items": {"type": "string"}}),
            "options": _opt({"type": "object", "properties": {"convert": {"type": "boolean"}}}),
        },
        "required": ["file"],
    }
    upload_sdk = {
        "file": {"type": "string", "format": "binary"},
        "folder_id": _opt({"type": "string"}), "overwrite": _opt({"type": "boolean"}),
        "chunk_size": _opt({"type": "integer"}), "tags": _opt({"type": "array", "items": {"type": "string"}}),
        "options": _opt({"type": "object", "properties": {"convert": _opt({"type": "boolean"})}}),
    }
    download_body = {"title": "DownloadFileRequest", "type": "object",
                     "properties": {"file_id": {"type": "string", "minLength": 1}}, "required": ["file_id"]}
    list_files_body = {"title": "ListFilesRequest", "type": "object",
                       "properties": {"folder_id": _opt({"type": "string"}),
                                      "cursor": _opt({"type": "string"}),
                                      "per_page": _opt({"type": "integer", "minimum": 1, "maximum": 20})}}
    d = "google_drive"
    return {
        "upload_file": _action(d, "upload_file", "Upload a file.", upload_body, upload_sdk),
        "download_file": _action(d, "download_file", "Download a file.", download_body,
                                 {"file_id": {"type": "string"}}),
        "list_files": _action(d, "list_files", "List files.", list_files_body,
                              {"folder_id": _opt({"type": "string"}), "cursor": _opt({"type": "string"}),
                               "per_page": _opt({"type": "integer"})}),
    }


def _twitter():
    body = {"title": "TweetSearchRequest", "type": "object",
            "properties": {"query": {"type": "string", "minLength": 1},
                           "max_results": _opt({"type": "integer", "minimum": 10, "maximum": 100})},
            "required": ["query"]}
    return {"tweet_search": _action("twitter", "tweet_search", "Search tweets.", body,
                                    {"query": {"type": "string"}, "max_results": _opt({"type": "integer"})})}


def _misc():
    # Constructs keyway cannot enforce (a remote $ref, a look-behind), one it can (a leading
    # look-ahead, as pydantic emits for Decimal) and a pattern that backtracking engines take
    # exponential time on: keyway must report the first two, enforce the rest and stay fast.
    body = {"title": "OddActionRequest", "type": "object",
            "properties": {
                "remote": {"$ref": "https://schemas.example.com/remote.json"},
                "lookbehind": {"type": "string", "pattern": "(?<=@)example\\.com$"},
                "upper": {"type": "string", "pattern": "^(?=.*[A-Z]).+$"},
                "evil": {"type": "string", "pattern": "^(a+)+$"},
                "name": {"type": "string"},
            },
            "required": ["name"]}
    return {"odd_action": _action("misc", "odd_action", "An action with hostile schema constructs.", body,
                                  {"name": {"type": "string"}, "lookbehind": _opt({"type": "string"}),
                                   "upper": _opt({"type": "string"}), "evil": _opt({"type": "string"})})}


def default_document():
    """The discovery document (a fresh dict each call): connectors github, google_drive, twitter, misc."""
    return {"github": _github(), "google_drive": _google_drive(), "twitter": _twitter(), "misc": _misc()}


def actions_of(connector_doc):
    """The SDK's action filter (docs/bosa.md): POST entries not starting with the excluded prefixes."""
    return sorted(k for k, v in connector_doc.items()
                  if isinstance(v, dict) and v.get("method") == "POST" and not k.startswith(NON_ACTION_PREFIXES))


# ------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------

def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _error(status, message, code):
    """The documented BOSA error envelope."""
    return Response.json({"error": {"message": message, "code": code}}, status=status)


def _ok(data, meta=None):
    return Response.json({"data": data, "meta": meta})


class _Server(FakeUpstream):
    """FakeUpstream plus two delivery modes: a TCP reset after part of the answer (Response attribute
    `reset_after`: bytes sent first), and a listener that refuses connections for a while."""

    def _send_response(self, sock, req, resp, keep_alive):
        partial = getattr(resp, "reset_after", None)
        if partial is None:
            return super()._send_response(sock, req, resp, keep_alive)
        self._sleep(resp.delay)
        try:
            if partial:
                sock.sendall(partial)
                time.sleep(0.05)  # let the bytes leave before the RST overtakes them
            # SO_LINGER {on, 0}: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()
        return False

    def refuse_for(self, seconds):
        """Closes the listener (connections are refused) and every open connection (no pooled
        connection can be reused); listens again on the same port after `seconds`."""
        with self._lock:
            old = self._listener
            socks = list(self._socks)
        # shutdown() stops the listening at once (Linux), even while the accept thread still polls
        # the socket; close() alone would keep it listening until that poll returns.
        try:
            old.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        old.close()  # the accept loop sees errors and polls until the new listener is in place
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        reopened = threading.Event()

        def reopen():
            if not self._stop.wait(seconds):
                ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((self.host, self.port))
                ls.listen(4096)
                ls.settimeout(0.2)
                self._listener = ls
            reopened.set()

        threading.Thread(target=reopen, name="fake-bosa-reopen", daemon=True).start()
        return reopened


class FakeBosa:
    """A BOSA server on 127.0.0.1 (port 0). See the module doc."""

    def __init__(self, client_key, users=None, document=None, token_lifetime=3600.0, items=7, ssl_context=None):
        self.client_key = client_key
        self.client_id = str(uuid.uuid4())
        self._lock = threading.Lock()
        self._document = document if document is not None else default_document()
        self._doc_bytes = None
        self._users = {}               # identifier -> {"secret", "id", "integrations": {app: [uid, ...]}}
        self._tokens = {}              # token -> {"identifier", "exp", "revoked"}
        self._mints = {}               # identifier -> successful mints
        self._lifetimes = {}           # identifier -> seconds (else token_lifetime)
        self._scripts = {}             # action name -> [Response, ...] served first, in order
        self._always_401 = set()       # identifiers whose action calls always get 401
        self._signing_key = uuid.uuid4().bytes
        self.token_lifetime = float(token_lifetime)
        self.items = items             # list_pull_requests / list_files item count
        self.external_tokens = set()   # bearers minted elsewhere that this server accepts as they are
        self.discovery_delay = 0.0     # seconds before answering GET /connectors*
        self.discovery_failure = None  # a Response served instead of the document (None = serve it)
        for ident, secret in (users or {}).items():
            self.add_user(ident, secret)
        self._server = _Server(default=None, ssl_context=ssl_context)
        self._server.route("*", re.compile(r"^"), self._dispatch)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self):
        self._server.start()
        return self

    def stop(self):
        self._server.stop()

    @property
    def port(self):
        return self._server.port

    @property
    def url(self):
        return self._server.url

    @property
    def server(self):
        """The FakeUpstream underneath (connection and TLS counters)."""
        return self._server

    def refuse_for(self, seconds):
        """The port refuses connections for `seconds` (open connections are closed too). Returns an
        Event set once the listener is back."""
        return self._server.refuse_for(seconds)

    # ---- scripting ------------------------------------------------------------------------------
    @property
    def document(self):
        """A copy of the discovery document; change it with set_document()."""
        with self._lock:
            return copy.deepcopy(self._document)

    def set_document(self, document):
        with self._lock:
            self._document = document
            self._doc_bytes = None

    def document_bytes(self):
        """The exact bytes served for GET /connectors."""
        with self._lock:
            if self._doc_bytes is None:
                self._doc_bytes = json.dumps(self._document).encode("utf-8")
            return self._doc_bytes

    def add_user(self, identifier, secret):
        with self._lock:
            self._users[identifier] = {"secret": secret, "id": str(uuid.uuid4()), "integrations": {}}

    def add_integration(self, identifier, app, user_identifier):
        with self._lock:
            self._users[identifier]["integrations"].setdefault(app, []).append(user_identifier)

    def set_token_lifetime(self, identifier, seconds):
        """Tokens minted for `identifier` from now on expire `seconds` after minting."""
        with self._lock:
            self._lifetimes[identifier] = float(seconds)

    def revoke_tokens(self, identifier):
        """Every token minted so far for `identifier` is refused (401) from now on."""
        with self._lock:
            for rec in self._tokens.values():
                if rec["identifier"] == identifier:
                    rec["revoked"] = True

    def always_401(self, identifier):
        """Action calls made as `identifier` get 401 whatever the token."""
        with self._lock:
            self._always_401.add(identifier)

    def script(self, action, response, times=1):
        """The next `times` calls of `action` get `response`, queued after anything scripted
        earlier for that action; then the action's normal handler answers again."""
        with self._lock:
            self._scripts.setdefault(action, []).extend([response] * times)

    def clear_scripts(self):
        with self._lock:
            self._scripts = {}

    @staticmethod
    def reset_response(partial=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"data\": ["):
        """A response that is a TCP reset after `partial` (default: a head and a bit of the body)."""
        r = Response(200)
        r.reset_after = partial
        return r

    @staticmethod
    def cut_short():
        """A 200 announcing 400 bytes of JSON, of which 20 are sent before the connection closes."""
        return Response(200, headers=[("Content-Type", "application/json")],
                        body=b"{\"data\": [" + b" " * 390, close_after=20)

    # ---- inspection -----------------------------------------------------------------------------
    @property
    def requests(self):
        return self._server.requests

    def clear_log(self):
        self._server.clear_log()

    def wait_for_requests(self, count, timeout=10.0):
        return self._server.wait_for_requests(count, timeout)

    def discovery_requests(self):
        """Every GET/HEAD of /connectors, /connectors/ (any query) and /connectors/names."""
        return self._server.find(lambda r: r.method in ("GET", "HEAD") and _is_discovery(r.target))

    def discovery_fetches(self):
        """Discovery requests of the document itself (not /connectors/names)."""
        return [r for r in self.discovery_requests() if r.path != "/connectors/names"]

    def action_requests(self, action=None, app=None):
        def pred(r):
            parts = _action_parts(r)
            return (parts is not None and (action is None or parts[1] == action)
                    and (app is None or parts[0] == app))
        return self._server.find(pred)

    def mint_requests(self, identifier=None):
        def pred(r):
            if r.method != "POST" or r.path != "/auth/tokens":
                return False
            if identifier is None:
                return True
            try:
                return json.loads(r.body.decode("utf-8")).get("identifier") == identifier
            except (ValueError, AttributeError):
                return False
        return self._server.find(pred)

    def mints(self, identifier):
        """Tokens successfully minted for `identifier` since start."""
        with self._lock:
            return self._mints.get(identifier, 0)

    def tokens_of(self, identifier):
        """Every token minted for `identifier`, oldest first."""
        with self._lock:
            return [t for t, rec in self._tokens.items() if rec["identifier"] == identifier]

    def user_of(self, req):
        """The identifier whose token `req` carried (None without a valid one)."""
        auth = req.header("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None
        with self._lock:
            rec = self._tokens.get(auth[7:])
            return rec["identifier"] if rec else None

    # ---- request handling -----------------------------------------------------------------------
    def _dispatch(self, req):
        try:
            return self._route(req)
        except Exception as e:  # a bug in the fake must show up as a 500 in the test, not a hang
            return _error(500, "fake_bosa crashed: %r" % (e,), "FAKE_ERROR")

    def _route(self, req):
        path = routing_path(req.path)
        if req.method in ("GET", "HEAD") and _is_discovery(req.target):
            return self._discovery(req)
        if path == "/auth/tokens" and req.method == "POST":
            return self._mint(req)
        if not self._key_ok(req):
            return _error(401, "Invalid API key", "INVALID_API_KEY")
        if path == "/users" and req.method == "POST":
            return self._create_user(req)
        m = re.fullmatch(r"/connectors/([^/]+)/(integration-exists|integrations)(?:/([^/]+))?", path)
        if path == "/users/me" or m:
            ident, err = self._bearer_user(req)
            if err is not None:
                return err
            if ident is None:
                return _error(401, "A user token is required", "UNAUTHORIZED")
            if path == "/users/me":
                return self._me(ident) if req.method == "GET" else _error(405, "Method not allowed", "METHOD")
            return self._integrations(req, ident, m.group(1), m.group(2), m.group(3))
        parts = _action_parts(req)
        if parts is not None:
            return self._action(req, *parts)
        return _error(404, "Not found: %s %s" % (req.method, path), "NOT_FOUND")

    def _key_ok(self, req):
        values = req.header_all("X-API-Key")
        return len(values) == 1 and hmac.compare_digest(values[0].encode(), self.client_key.encode())

    def _bearer_user(self, req):
        """(identifier or None, error Response or None) for the request's Authorization header."""
        auths = req.header_all("Authorization")
        if not auths:
            return None, None
        if len(auths) != 1 or not auths[0].startswith("Bearer "):
            return None, _error(401, "Malformed Authorization header", "INVALID_TOKEN")
        token = auths[0][7:]
        with self._lock:
            if token in self.external_tokens:
                return "external", None
            rec = self._tokens.get(token)
            if rec is None or rec["revoked"] or time.time() >= rec["exp"]:
                return None, _error(401, "Invalid or expired token", "INVALID_TOKEN")
            return rec["identifier"], None

    def _discovery(self, req):
        if self.discovery_delay:
            time.sleep(self.discovery_delay)
        failure = self.discovery_failure
        if failure is not None:
            return failure
        if req.path == "/connectors/names":
            with self._lock:
                names = list(self._document.keys())
            return Response.json(names)
        query = urllib.parse.parse_qs(req.query or "")
        if "modules" not in query:
            return Response(200, headers=[("Content-Type", "application/json")], body=self.document_bytes())
        wanted = [n for v in query["modules"] for n in v.split(",") if n]
        with self._lock:
            sub = {n: self._document[n] for n in wanted if n in self._document}
        return Response.json(sub)

    def _mint(self, req):
        if not self._key_ok(req):
            return _error(401, "Invalid API key", "INVALID_API_KEY")
        try:
            body = json.loads(req.body.decode("utf-8"))
            ident, secret = body["identifier"], body["secret"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return Response.json({"detail": [{"loc": ["body"], "msg": "identifier and secret required"}]},
                                 status=422)
        with self._lock:
            user = self._users.get(ident)
            if user is None or not hmac.compare_digest(str(secret).encode(), user["secret"].encode()):
                return _error(401, "Invalid identifier or secret", "INVALID_CREDENTIALS")
            now = time.time()
            exp = now + self._lifetimes.get(ident, self.token_lifetime)
            claims = {"sub": user["id"], "client_id": self.client_id, "identifier": ident,
                      "jti": str(uuid.uuid4()), "exp": int(exp)}
            signing_input = (_b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "."
                             + _b64url(json.dumps(claims).encode()))
            sig = hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()
            token = signing_input + "." + _b64url(sig)
            self._tokens[token] = {"identifier": ident, "exp": exp, "revoked": False}
            self._mints[ident] = self._mints.get(ident, 0) + 1
            user_id = user["id"]
        expires_at = (datetime.datetime.fromtimestamp(exp, datetime.timezone.utc).replace(tzinfo=None)
                      .isoformat(timespec="microseconds"))
        return _ok({"token": token, "token_type": "Bearer", "expires_at": expires_at, "is_revoked": False,
                    "user_id": user_id, "client_id": self.client_id})

    def _create_user(self, req):
        try:
            ident = json.loads(req.body.decode("utf-8"))["identifier"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, "identifier required", "BAD_REQUEST")
        secret = "sk-user-" + _b64url(uuid.uuid4().bytes) + "." + _b64url(ident.encode()) + "." + _b64url(
            uuid.uuid4().bytes + uuid.uuid4().bytes)
        self.add_user(ident, secret)
        with self._lock:
            uid = self._users[ident]["id"]
        return _ok({"id": uid, "client_id": self.client_id, "identifier": ident, "secret": secret,
                    "secret_preview": "sk-user-..." + secret[-8:], "is_active": True, "integrations": []})

    def _me(self, ident):
        with self._lock:
            user = self._users.get(ident)
            if user is None:
                return _error(404, "User not found", "NOT_FOUND")
            integrations = [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, app + "/" + uid)), "client_id": self.client_id,
                             "user_id": user["id"], "connector": app, "user_identifier": uid, "selected": i == 0}
                            for app, uids in user["integrations"].items() for i, uid in enumerate(uids)]
            return _ok({"id": user["id"], "client_id": self.client_id, "identifier": ident,
                        "secret_preview": "sk-user-..." + user["secret"][-8:], "is_active": True,
                        "integrations": integrations})

    def _integrations(self, req, ident, app, kind, user_identifier):
        with self._lock:
            if app not in self._document:
                return _error(404, "Connector %s not found" % app, "NOT_FOUND")
            user = self._users.get(ident, {"integrations": {}})
            uids = user["integrations"].setdefault(app, [])
            if kind == "integration-exists":
                if req.method != "GET" or user_identifier is not None:
                    return _error(405, "Method not allowed", "METHOD")
                return _ok({"has_integration": bool(uids)})
            if user_identifier is None:
                if req.method != "POST":
                    return _error(405, "Method not allowed", "METHOD")
                try:
                    body = json.loads(req.body.decode("utf-8") or "{}")
                except ValueError:
                    return Response.json({"message": "body is not JSON"}, status=400)
                if body.get("auth_type") == "custom":
                    uid = str(body.get("configuration", {}).get("identifier") or "custom")
                    uids.append(uid)
                    return _ok({"connector": app, "user_identifier": uid, "selected": len(uids) == 1})
                if not body.get("callback_url"):
                    return Response.json({"message": "callback_url is required"}, status=400)
                state = _b64url(hashlib.sha256((ident + app).encode()).digest()[:12])
                return _ok({"url": "https://github.com/login/oauth/authorize?client_id=fake&state=%s&redirect_uri=%s"
                            % (state, urllib.parse.quote(body["callback_url"], safe=""))})
            if user_identifier not in uids:
                return _ok({"success": False, "error": "integration %s not found" % user_identifier})
            if req.method == "GET":
                return _ok({"connector": app, "user_identifier": user_identifier, "auth_string": "gho_****",
                            "auth_scopes": ["repo"], "selected": uids[0] == user_identifier})
            if req.method == "POST":  # select: becomes the default
                uids.remove(user_identifier)
                uids.insert(0, user_identifier)
                return _ok({"success": True})
            if req.method == "DELETE":
                uids.remove(user_identifier)
                return _ok({"success": True})
            return _error(405, "Method not allowed", "METHOD")

    def _action(self, req, app, action):
        with self._lock:
            entry = self._document.get(app, {}).get(action)
        if req.method != "POST" or not isinstance(entry, dict) or entry.get("method") != "POST":
            return _error(404, "Action %s/%s not found" % (app, action), "NOT_FOUND")
        ident, err = self._bearer_user(req)
        if err is not None:
            return err
        with self._lock:
            if ident is not None and ident in self._always_401:
                return _error(401, "Token rejected", "INVALID_TOKEN")
            queue = self._scripts.get(action)
            scripted = queue.pop(0) if queue else None
        if scripted is not None:
            return scripted
        ctype = req.header("Content-Type") or ""
        params = None
        if "json" in ctype.lower() or (not ctype and req.body):
            try:
                params = json.loads(req.body.decode("utf-8")) if req.body else {}
            except ValueError:
                return Response.json({"detail": [{"msg": "body is not JSON"}]}, status=422)
        elif not ctype:
            params = {}
        context = {"connector": app, "action": action, "user": ident,
                   "integration": req.header("X-Bosa-Integration")}
        handler = getattr(self, "_act_" + action, None)
        if handler is not None:
            return handler(req, params if params is not None else {}, context)
        echo = dict(context, params=params, content_type=ctype or None)
        if action.startswith(("list_", "search_")):
            return _ok([echo], {"total": 1, "total_page": 1, "has_next": False, "has_prev": False})
        return _ok(echo)

    # ---- action handlers ------------------------------------------------------------------------
    def _cursor_page(self, params, context, make_item):
        per_page = int(params.get("per_page") or 3)
        cursor = params.get("cursor")
        offset = int(cursor[4:]) if isinstance(cursor, str) and cursor.startswith("cur_") else 0
        items = [make_item(i) for i in range(1, self.items + 1)]
        page = items[offset:offset + per_page]
        nxt = offset + per_page
        meta = {"total": len(items), "total_page": -(-len(items) // per_page),
                "has_next": nxt < len(items), "has_prev": offset > 0,
                "forwards_cursor": "cur_%d" % nxt if nxt < len(items) else None,
                "backwards_cursor": "cur_%d" % max(0, offset - per_page) if offset > 0 else None}
        return _ok(page, meta)

    def _act_list_pull_requests(self, req, params, context):
        repo = "%s/%s" % (params.get("owner"), params.get("repo"))
        return self._cursor_page(params, context, lambda i: {"number": i, "repo": repo, "title": "PR %d" % i,
                                                             "state": params.get("state", "open"),
                                                             "user": context["user"]})

    def _act_list_files(self, req, params, context):
        return self._cursor_page(params, context, lambda i: {"id": "file-%d" % i, "name": "f%d.txt" % i})

    def _act_search_commits(self, req, params, context):
        page = int(params.get("page") or 1)
        limit = int(params.get("limit") or 2)
        total = 5
        first = (page - 1) * limit
        data = [{"sha": hashlib.sha1(("%s-%d" % (params.get("query"), i)).encode()).hexdigest()[:12], "n": i}
                for i in range(first + 1, min(total, first + limit) + 1)]
        total_page = -(-total // limit)
        return _ok(data, {"page": page, "limit": limit, "total": total, "total_page": total_page,
                          "has_next": page < total_page, "has_prev": page > 1})

    def _act_upload_file(self, req, params, context):
        ctype = req.header("Content-Type") or ""
        echo = {"content_type": ctype, "body_sha256": hashlib.sha256(req.body).hexdigest(),
                "body_size": len(req.body), "user": context["user"]}
        if ctype.lower().startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + req.body)
            parts = []
            for part in msg.iter_parts():
                payload = part.get_payload(decode=True) or b""
                entry = {"name": part.get_param("name", header="content-disposition"),
                         "filename": part.get_filename(), "size": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest(),
                         "content_type": part.get("Content-Type")}
                if entry["filename"] is None:
                    entry["value"] = payload.decode("utf-8", "replace")
                extra = [[k, str(v)] for k, v in part.items()
                         if k.lower() not in ("content-disposition", "content-type")]
                if extra:
                    entry["headers"] = extra
                parts.append(entry)
            echo["parts"] = parts
        elif ctype.lower().startswith("application/x-www-form-urlencoded"):
            echo["fields"] = urllib.parse.parse_qsl(req.body.decode("latin-1"), keep_blank_values=True,
                                                    encoding="latin-1")
        else:
            echo["params"] = params
        return _ok(echo)

    def _act_download_file(self, req, params, context):
        file_id = str(params.get("file_id", ""))
        body = bytes(range(256)) * 3 + file_id.encode("utf-8")
        return Response(200, headers=[("Content-Type", "application/pdf"),
                                      ("Content-Disposition", 'attachment; filename="report-%s.pdf"' % file_id),
                                      ("X-Fake-File-Sha256", hashlib.sha256(body).hexdigest())],
                        body=body)

    def _act_get_raw_blob(self, req, params, context):
        # Deliberately no Content-Type: keyway must add one (the SDK crashes without it).
        return Response(200, body=b"blob:" + str(params.get("sha")).encode("utf-8"))


def _is_discovery(target):
    path = target.split("?", 1)[0]
    return path in ("/connectors", "/connectors/", "/connectors/names")


def routing_path(path):
    """The path as BOSA's server routes it: percent-escapes decoded (as the ASGI server does before
    routing), runs of '/' merged (as the proxy in front of it does) and a trailing '/' dropped (as
    the framework's slash redirect does). So "/connectors/github/create_issue/" and
    "/connectors//github/create%5Fissue" reach the action create_issue, as they would upstream."""
    decoded = urllib.parse.unquote(path)
    merged = re.sub(r"/{2,}", "/", decoded)
    if len(merged) > 1:
        merged = merged.rstrip("/") or "/"
    return merged


def _action_parts(req):
    """(app, action) for /connectors/{app}/{action} (not the integration routes), else None."""
    m = re.fullmatch(r"/connectors/([^/]+)/([^/]+)", routing_path(req.path))
    if not m or m.group(1) == "names" or m.group(2).startswith(NON_ACTION_PREFIXES):
        return None
    return m.group(1), m.group(2)


def _main(argv=None):
    import argparse
    import signal
    ap = argparse.ArgumentParser(description="Fake BOSA server (keyway tests).")
    ap.add_argument("--client-key", required=True)
    ap.add_argument("--user", action="append", default=[], help="IDENTIFIER=SECRET (repeatable)")
    ap.add_argument("--token-lifetime", type=float, default=3600.0)
    args = ap.parse_args(argv)
    users = dict(u.split("=", 1) for u in args.user)
    fake = FakeBosa(args.client_key, users=users, token_lifetime=args.token_lifetime).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(json.dumps({"msg": "listening", "url": fake.url, "port": fake.port}), flush=True)
    while not done.wait(0.5):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
