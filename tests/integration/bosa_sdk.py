"""bosa_sdk.py: an emulation of the official BOSA Python SDK (`bosa_connectors.BosaConnector` /
`gl_connectors_sdk.GLConnectors`) on the wire, for keyway's integration tests. PyPI is unreachable
here, so this reproduces what docs/bosa.md documents, byte for byte where it matters:

- discovery `GET {base}/connectors/?modules={app}` (trailing slash, no auth headers), lazily on first
  use and cached per instance and app; `GET {base}/connectors/names`; the action filter and the fields
  the SDK reads (a malformed entry fails the connector's load, as in the SDK);
- client-side validation against `parameters.request.schema` (top-level strings stripped and ""
  dropped, required only when no anyOf member is null, pydantic-lax coercion, unknown keys and None
  values dropped; enum, bounds and pattern ignored, as in the SDK);
- action POSTs with the headers in the order `requests` puts them on the wire (its session defaults,
  then the caller's headers, X-API-Key, Authorization, X-Bosa-Integration, then Content-Length and
  Content-Type), body as JSON (`json.dumps` defaults), form-encoded or multipart with the
  stringification of `requests`/urllib3 (True -> "True", lists -> repeated fields, a dict -> its keys);
- response handling: JSON when Content-Type holds application/json, else a ConnectorFile (filename from
  Content-Disposition's plain `filename=`); no Content-Type raises TypeError like the SDK;
- `run()` -> ActionResponse with has_next()/next_page()/prev_page()/get_all_items() as the SDK pages;
  the SDK's own retries (max_attempts, default 1); users, tokens and integrations helpers.

Each call opens its own connection (the SDK calls module-level `requests.get/post`). `last_response`
and `exchanges` keep the raw HTTP responses for assertions the real SDK would not expose (headers
such as X-Keyway-Cache)."""

import binascii
import gzip
import json
import os
import random
import time
import urllib.parse
import zlib

from harness import ConnectionClosed, request as _raw_request

__all__ = ["GLConnectors", "BosaConnector", "GLConnectorError", "BosaConnectorError", "ConnectorFile",
           "ActionResponse", "RequestException", "REQUESTS_USER_AGENT", "encode_multipart", "encode_form"]

REQUESTS_USER_AGENT = "python-requests/2.28.1"  # Debian 12's python3-requests
_EXCLUDED_PREFIXES = ("integrations", "integration-exists", "success-authorize-callback")
_MAX_RETRY = 10


class GLConnectorError(Exception):
    """A connector could not be loaded (the SDK's GLConnectorError / BosaConnectorError)."""


BosaConnectorError = GLConnectorError


class RequestException(IOError):
    """requests.RequestException: connection refused or reset, timeout, a response cut short."""


class ConnectorFile:
    """models/file.py: a file to upload, or a non-JSON response."""

    def __init__(self, file, filename=None, content_type=None, headers=None):
        self.file = file
        self.filename = filename
        self.content_type = content_type
        self.headers = headers

    def __repr__(self):
        return "<ConnectorFile %r %r %d bytes>" % (self.filename, self.content_type, len(self.file))


# ------------------------------------------------------------------------------------------------
# The `requests` layer
# ------------------------------------------------------------------------------------------------

class _Response:
    def __init__(self, raw):
        self.raw = raw                        # harness.HttpResponse
        self.status_code = raw.status
        self.headers = _CaseInsensitive(raw.headers)
        body = raw.body or b""
        enc = (self.headers.get("Content-Encoding") or "").lower()
        if enc == "gzip":
            body = gzip.decompress(body)
        elif enc == "deflate":
            body = zlib.decompress(body)
        self.content = body

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content.decode("utf-8"))


class _CaseInsensitive:
    """requests' CaseInsensitiveDict over the response headers (repeats joined with ", ")."""

    def __init__(self, pairs):
        self._d = {}
        for n, v in pairs:
            k = n.lower()
            self._d[k] = (n, self._d[k][1] + ", " + v) if k in self._d else (n, v)

    def get(self, name, default=None):
        return self._d.get(name.lower(), (None, default))[1]

    def __contains__(self, name):
        return name.lower() in self._d

    def items(self):
        return [v for v in self._d.values()]

    def as_dict(self):
        return dict(self._d.values())


def _merge_headers(caller):
    """requests.Session: its default headers first, the request's own merged in (same name: the
    value is replaced where the default stood; new names are appended in the caller's order)."""
    out = [["User-Agent", REQUESTS_USER_AGENT], ["Accept-Encoding", "gzip, deflate"], ["Accept", "*/*"],
           ["Connection", "keep-alive"]]
    for name, value in caller:
        for pair in out:
            if pair[0].lower() == name.lower():
                pair[1] = value
                break
        else:
            out.append([name, value])
    return [(n, v) for n, v in out if v is not None]


def _stringify(value):
    """How requests/urllib3 turn a form value into text: str() (True -> "True", 1 -> "1")."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _form_pairs(data):
    """requests' to_key_val_list + the list rule: a string or a non-iterable is one value; any other
    iterable (a list, or a dict: its keys) gives one field per element; None values are skipped."""
    pairs = []
    for key, vs in data.items():
        if isinstance(vs, (str, bytes)) or not hasattr(vs, "__iter__"):
            vs = [vs]
        for v in vs:
            if v is not None:
                pairs.append((key, v))
    return pairs


def encode_form(data):
    """requests' _encode_params: application/x-www-form-urlencoded."""
    return urllib.parse.urlencode([(k.encode("utf-8"), _stringify(v)) for k, v in _form_pairs(data)],
                                  doseq=True).encode("ascii")


def _quote_param(name, value):
    # urllib3 1.26 format_header_param_html5: quote, backslash and control characters escaped.
    value = value.replace("\\", "\\\\").replace('"', "%22")
    value = "".join("%%%02X" % ord(c) if ord(c) < 0x20 and c != "\x1b" else c for c in value)
    return '%s="%s"' % (name, value)


def encode_multipart(data, files, boundary=None):
    """requests' _encode_files + urllib3's encode_multipart_formdata: plain fields first (in `data`
    order, stringified), then the files [(name, ConnectorFile)]. Returns (body, content_type)."""
    boundary = boundary or binascii.hexlify(os.urandom(16)).decode("ascii")
    out = bytearray()
    for key, v in _form_pairs(data):
        out += b"--" + boundary.encode("latin-1") + b"\r\n"
        out += ("Content-Disposition: form-data; %s\r\n\r\n" % _quote_param("name", key)).encode("utf-8")
        out += _stringify(v) + b"\r\n"
    for key, f in files:
        out += b"--" + boundary.encode("latin-1") + b"\r\n"
        disp = "form-data; " + _quote_param("name", key)
        if f.filename is not None:
            disp += "; " + _quote_param("filename", f.filename)
        lines = ["Content-Disposition: " + disp]
        if f.content_type:
            lines.append("Content-Type: " + f.content_type)
        for hn, hv in (f.headers or {}).items():
            lines.append("%s: %s" % (hn, hv))
        out += ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        out += (f.file if isinstance(f.file, bytes) else str(f.file).encode("utf-8")) + b"\r\n"
    out += b"--" + boundary.encode("latin-1") + b"--\r\n"
    return bytes(out), "multipart/form-data; boundary=" + boundary


class _Requests:
    """The slice of `requests` the SDK uses: get/post/delete with headers, json=, data=, files=."""

    def __init__(self, owner):
        self.owner = owner

    def send(self, method, url, headers=None, json_body=None, data=None, files=None, timeout=None):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise RequestException("unsupported URL %r" % url)
        port = u.port or 80
        target = (u.path or "/") + ("?" + u.query if u.query else "")
        caller = list((headers or {}).items())
        body, ctype = None, None
        if files:
            body, ctype = encode_multipart(data or {}, files)
        elif data:
            body, ctype = encode_form(data), "application/x-www-form-urlencoded"
            if not body:
                body, ctype = None, None
        elif json_body is not None:
            body, ctype = json.dumps(json_body, allow_nan=False).encode("utf-8"), "application/json"
        hdrs = [("Host", u.hostname + (":%d" % u.port if u.port else ""))] + _merge_headers(caller)
        names = {n.lower() for n, _ in hdrs}
        if body is not None:
            hdrs.append(("Content-Length", str(len(body))))
        elif method not in ("GET", "HEAD") and "content-length" not in names:
            hdrs.append(("Content-Length", "0"))
        if ctype and "content-type" not in names:
            hdrs.append(("Content-Type", ctype))
        self.owner.sent.append({"method": method, "target": target, "headers": hdrs, "body": body or b""})
        try:
            raw = _raw_request(port, method, target, hdrs, body, timeout=timeout or 300.0,
                               host=False, content_length=False)
        except (OSError, ConnectionClosed, ValueError) as e:  # refused, reset, timed out, cut short
            raise RequestException("%s %s: %r" % (method, url, e))
        resp = _Response(raw)
        self.owner.last_response = raw
        self.owner.exchanges.append((self.owner.sent[-1], raw))
        return resp


# ------------------------------------------------------------------------------------------------
# Client-side validation (pydantic v2, lax mode, models built from parameters.request.schema)
# ------------------------------------------------------------------------------------------------

class _Field:
    """One property's Python type as the SDK derives it: kind in str, bytes, int, float, bool, list,
    dict, model; `item` for lists; `fields` for models; `optional` when an anyOf member is null."""

    def __init__(self, kind, optional=False, item=None, fields=None):
        self.kind, self.optional, self.item, self.fields = kind, optional, item, fields


def _python_type(schema):
    t = schema["type"]
    if isinstance(t, list):
        # `"type": ["string", "null"]` cannot be a dict key in the SDK: an uncaught TypeError.
        raise TypeError("unhashable type: 'list'")
    if t == "string":
        return _Field("bytes" if schema.get("format") == "binary" else "str")
    if t == "integer":
        return _Field("int")
    if t == "number":
        return _Field("float")
    if t == "boolean":
        return _Field("bool")
    if t == "array":
        return _Field("list", item=_type_info(schema["items"]) if "items" in schema else None)
    if t == "object":
        if "properties" in schema:
            return _Field("model", fields=_model_fields(schema))
        return _Field("dict")
    return _Field("str")  # unknown types become str


def _type_info(schema):
    """_get_type_info: the field, or None when the SDK logs and skips the property."""
    if "anyOf" in schema:
        members = schema["anyOf"]
        optional = any(m["type"] == "null" for m in members)  # KeyError on an untyped member, as in the SDK
        types = [m for m in members if m["type"] != "null"]
        if not types:
            return _Field("any", optional=True)
        f = _python_type(types[0]) if len(types) == 1 else _Field("union")
        if len(types) > 1:
            f.item = [_python_type(m) for m in types]
        f.optional = optional
        return f
    if "type" in schema:
        return _python_type(schema)
    if "schema" in schema:
        return _type_info(schema["schema"])
    return None


def _model_fields(schema):
    fields = {}
    for name, prop in (schema.get("properties") or {}).items():
        info = _type_info(prop)
        if info is not None:
            fields[name] = info
    return fields


_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


class _Invalid(Exception):
    pass


def _coerce(field, value, loc, errors):
    kind = field.kind
    if kind == "any":
        return value
    if kind == "union":
        for f in field.item:
            sub = []
            out = _coerce(f, value, loc, sub)
            if not sub:
                return out
        errors.append({"loc": loc, "msg": "Input does not match any member of the union"})
        return None
    if kind == "str":
        if isinstance(value, str):
            return value
        errors.append({"loc": loc, "msg": "Input should be a valid string"})
    elif kind == "bytes":
        if isinstance(value, (bytes, ConnectorFile)):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        errors.append({"loc": loc, "msg": "Input should be a valid bytes"})
    elif kind == "int":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        errors.append({"loc": loc, "msg": "Input should be a valid integer"})
    elif kind == "float":
        if isinstance(value, (int, float)):
            return float(value) if not isinstance(value, bool) else float(int(value))
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        errors.append({"loc": loc, "msg": "Input should be a valid number"})
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        errors.append({"loc": loc, "msg": "Input should be a valid boolean"})
    elif kind == "list":
        if isinstance(value, (list, tuple, set)):
            if field.item is None:
                return list(value)
            return [_coerce(field.item, v, loc + [i], errors) for i, v in enumerate(value)]
        errors.append({"loc": loc, "msg": "Input should be a valid list"})
    elif kind == "dict":
        if isinstance(value, dict):
            return value
        errors.append({"loc": loc, "msg": "Input should be a valid dictionary"})
    elif kind == "model":
        if isinstance(value, dict):
            return _validate_model(field.fields, value, loc, errors)
        errors.append({"loc": loc, "msg": "Input should be a valid dictionary or instance of the model"})
    return None


def _validate_model(fields, params, loc, errors):
    out = {}
    for name, field in fields.items():  # model_dump order is the field order, not the input's
        value = params.get(name)
        if value is None:
            if not field.optional:
                errors.append({"loc": loc + [name], "msg": "Field required"})
            continue
        coerced = _coerce(field, value, loc + [name], errors)
        if coerced is not None:
            out[name] = coerced  # exclude_none=True
    return out


def _dump(value):
    """model_dump: nested None values are excluded as well."""
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------
# The SDK
# ------------------------------------------------------------------------------------------------

class _Action:
    def __init__(self, name, entry):
        if not isinstance(entry.get("docstring"), str):
            raise KeyError("docstring")
        path = entry["path"]
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("path must start with /")
        parameters = entry["parameters"]
        if not isinstance(parameters, dict):
            raise TypeError("parameters must be a dict")
        self.name = name
        self.path = path
        self.docstring = entry["docstring"]
        request = parameters.get("request")
        self.schema = request["schema"] if request else {"properties": {}}
        if request and not isinstance(self.schema["properties"], dict):
            raise TypeError("parameters.request.schema.properties must be a dict")
        self.fields = _model_fields(self.schema)
        self.has_bytes = any(f.kind == "bytes" or (f.kind == "list" and f.item is not None and f.item.kind == "bytes")
                             for f in self.fields.values())


class GLConnectorModule:
    """One connector's actions, loaded from `GET {base}/connectors/?modules={app}`."""

    def __init__(self, connectors, app):
        self.connectors = connectors
        self.app = app
        self.actions = {}
        self._init_schemas()

    def _init_schemas(self):
        url = self.connectors.api_base_url + "/connectors/?modules=" + self.app
        try:
            resp = self.connectors._http.send("GET", url, timeout=30)
            if 500 < resp.status_code < 600:
                raise GLConnectorError("HTTP %d" % resp.status_code)
            doc = resp.json()
            if self.app not in doc:
                raise GLConnectorError("No connector found for app: %s" % self.app)
            for key, entry in doc[self.app].items():
                if entry.get("method") != "POST" or key.startswith(_EXCLUDED_PREFIXES):
                    continue
                self.actions[key] = _Action(key, entry)
        except GLConnectorError as e:
            if "No connector found" in str(e):
                raise
            raise GLConnectorError("Connector failed to initialize: %s" % e)
        except Exception as e:  # KeyError, TypeError, ValueError, RequestException: all wrapped
            raise GLConnectorError("Connector failed to initialize: %r" % (e,))

    def validate(self, action, params):
        if action not in self.actions:
            raise ValueError("Action %s not found. Available actions: %s"
                             % (action, ", ".join(sorted(self.actions))))
        cleaned = {}
        for k, v in (params or {}).items():
            if isinstance(v, str):
                v = v.strip()
                if v == "":
                    continue
            cleaned[k] = v
        errors = []
        out = _validate_model(self.actions[action].fields, cleaned, [], errors)
        if errors:
            raise ValueError("Invalid parameters: %s" % json.dumps(errors))
        return _dump(out)

    def execute(self, action, params=None, headers=None, token=None, identifier=None, max_attempts=1,
                timeout=None):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        max_attempts = min(max_attempts, _MAX_RETRY + 1)
        validated = self.validate(action, params)
        act = self.actions[action]
        headers = headers if headers is not None else {}
        headers["X-API-Key"] = self.connectors.api_key
        if token:
            headers["Authorization"] = "Bearer " + token
        if identifier:
            headers["X-Bosa-Integration"] = identifier
        files, data = [], {}
        for k, v in validated.items():
            if isinstance(v, ConnectorFile):
                files.append((k, v))
            elif isinstance(v, list) and v and all(isinstance(x, ConnectorFile) for x in v):
                files.extend((k, x) for x in v)
            else:
                data[k] = v
        url = self.connectors.api_base_url + act.path
        for attempt in range(max_attempts):
            last = attempt == max_attempts - 1
            try:
                if files:
                    resp = self.connectors._http.send("POST", url, headers, data=data, files=files, timeout=timeout)
                elif act.has_bytes:
                    resp = self.connectors._http.send("POST", url, headers, data=data, timeout=timeout)
                else:
                    resp = self.connectors._http.send("POST", url, headers, json_body=data, timeout=timeout)
            except RequestException:
                if last:
                    raise
                time.sleep(min(2 ** attempt, 64) + random.uniform(0, 1))
                continue
            if (resp.status_code == 429 or 500 <= resp.status_code < 600) and not last:
                time.sleep(min(2 ** attempt, 64) + random.uniform(0, 1))
                continue
            return _response_return(resp)
        raise AssertionError("unreachable")


def _response_return(resp):
    ctype = resp.headers.get("Content-Type")
    if "application/json" in ctype:  # None raises TypeError, exactly like the SDK
        return resp.json(), resp.status_code
    return ConnectorFile(file=resp.content, filename=_filename(resp.headers.get("Content-Disposition")),
                         content_type=ctype, headers=resp.headers.as_dict()), resp.status_code


def _filename(disposition):
    """cgi.parse_header(...)[1].get("filename"): only a plain filename= parameter."""
    if not disposition:
        return None
    parts = _parse_header_params(disposition)
    return parts.get("filename")


def _parse_header_params(line):
    # cgi.parse_header, minus the main value.
    params = {}
    items = []
    rest = ";" + line
    while rest[:1] == ";":
        rest = rest[1:]
        end = rest.find(";")
        while end > 0 and (rest.count('"', 0, end) - rest.count('\\"', 0, end)) % 2:
            end = rest.find(";", end + 1)
        if end < 0:
            end = len(rest)
        items.append(rest[:end].strip())
        rest = rest[end:]
    for p in items[1:]:
        i = p.find("=")
        if i >= 0:
            name = p[:i].strip().lower()
            value = p[i + 1:].strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace("\\\\", "\\").replace('\\"', '"')
            params[name] = value
    return params


class ActionResponse:
    """action_response.py: data/meta of one page, and the SDK's paging helpers."""

    def __init__(self, body, status, module, action, params, headers, token, identifier, max_attempts, timeout):
        self.status = status
        self._call = (module, action, params, headers, token, identifier, max_attempts, timeout)
        if isinstance(body, ConnectorFile):
            self.data, self.meta = body, {}
        else:
            if not isinstance(body, dict):
                raise ValueError("the response is not a JSON object")
            self.data = body.get("data", body)
            self.meta = body.get("meta") or {}
        if not isinstance(self.data, (dict, list, ConnectorFile)):
            raise ValueError("ActionResponseData: data must be an object, a list or a file")

    def is_list(self):
        return isinstance(self.data, list)

    def get_data(self):
        return self.data

    def get_meta(self):
        return self.meta

    def has_next(self):
        return self.is_list() and bool(self.meta.get("has_next"))

    def has_prev(self):
        return self.is_list() and bool(self.meta.get("has_prev"))

    def _again(self, params):
        module, action, _, headers, token, identifier, max_attempts, timeout = self._call
        body, status = module.execute(action, params, headers=dict(headers or {}), token=token,
                                      identifier=identifier, max_attempts=max_attempts, timeout=timeout)
        return ActionResponse(body, status, module, action, params, headers, token, identifier,
                              max_attempts, timeout)

    def next_page(self):
        if not self.has_next():
            return self
        params = dict(self._call[2] or {})
        if self.meta.get("forwards_cursor"):
            params["cursor"] = self.meta["forwards_cursor"]
        elif self.meta.get("page"):
            params["page"] = self.meta["page"] + 1
        return self._again(params)

    def prev_page(self):
        if not self.has_prev():
            return self
        params = dict(self._call[2] or {})
        if self.meta.get("backwards_cursor"):
            params["cursor"] = self.meta["backwards_cursor"]
        elif self.meta.get("page"):
            params["page"] = self.meta["page"] - 1
        return self._again(params)

    def get_all_items(self, max_pages=100):
        """[{"data", "meta"}] over all pages. max_pages guards the SDK's endless loop when the meta
        says has_next but gives neither cursor nor page (the emulation raises instead of looping)."""
        pages = [{"data": self.data, "meta": self.meta}]
        if not self.is_list():
            return pages
        cur = self
        while cur.has_next():
            if len(pages) >= max_pages:
                raise RuntimeError("get_all_items: more than %d pages (the SDK would loop forever)" % max_pages)
            cur = cur.next_page()
            pages.append({"data": cur.data, "meta": cur.meta})
        return pages


class _ActionBuilder:
    """connect(app).action(name).params({...}).token(t).identifier(i).headers(h).max_attempts(n)
    .timeout(s).run() / .execute()"""

    def __init__(self, module, name):
        if name not in module.actions:
            raise ValueError("Action %s not found. Available actions: %s" % (name, ", ".join(sorted(module.actions))))
        self._module, self._name = module, name
        self._params, self._token, self._identifier, self._headers = {}, None, None, None
        self._max_attempts, self._timeout = 1, None  # the fluent path has no timeout by default

    def params(self, params):
        self._params = dict(params)
        return self

    def token(self, token):
        self._token = token
        return self

    def identifier(self, identifier):
        self._identifier = identifier
        return self

    def headers(self, headers):
        self._headers = dict(headers)
        return self

    def max_attempts(self, n):
        self._max_attempts = n
        return self

    def timeout(self, seconds):
        self._timeout = seconds
        return self

    def execute(self):
        return self._module.execute(self._name, self._params, headers=dict(self._headers or {}),
                                    token=self._token, identifier=self._identifier,
                                    max_attempts=self._max_attempts, timeout=self._timeout)

    def run(self):
        body, status = self.execute()
        return ActionResponse(body, status, self._module, self._name, self._params, self._headers,
                              self._token, self._identifier, self._max_attempts, self._timeout)


class _Connection:
    def __init__(self, module):
        self._module = module

    def action(self, name):
        return _ActionBuilder(self._module, name)

    @property
    def actions(self):
        return sorted(self._module.actions)


class GLConnectors:
    """GLConnectors(api_base_url, api_key): the SDK's entry point (BosaConnector is the old name)."""

    DEFAULT_TIMEOUT = 30

    def __init__(self, api_base_url="https://api.bosa.id", api_key="bosa"):
        self.api_base_url = api_base_url
        self.api_key = api_key
        self._modules = {}
        self._http = _Requests(self)
        self.sent = []           # every request as sent: {"method", "target", "headers", "body"}
        self.exchanges = []      # (sent, harness.HttpResponse)
        self.last_response = None

    # -- connectors --
    def get_available_modules(self):
        resp = self._http.send("GET", self.api_base_url + "/connectors/names", timeout=30)
        return resp.json() if resp.status_code == 200 else []

    def get_connector(self, app):
        if app not in self._modules:
            self._modules[app] = GLConnectorModule(self, app)
        return self._modules[app]

    def refresh_connector(self, app):
        self._modules.pop(app, None)

    def connect(self, app):
        return _Connection(self.get_connector(app))

    def execute(self, app, action, input_=None, token=None, identifier=None, headers=None, max_attempts=1,
                timeout=DEFAULT_TIMEOUT):
        return self.get_connector(app).execute(action, input_, headers=headers, token=token,
                                               identifier=identifier, max_attempts=max_attempts, timeout=timeout)

    def run(self, app, action, input_=None, token=None, identifier=None, headers=None, max_attempts=1,
            timeout=DEFAULT_TIMEOUT):
        module = self.get_connector(app)
        body, status = module.execute(action, input_, headers=dict(headers or {}), token=token,
                                      identifier=identifier, max_attempts=max_attempts, timeout=timeout)
        return ActionResponse(body, status, module, action, input_, headers, token, identifier, max_attempts,
                              timeout)

    # -- users and tokens (helpers/authenticator.py) --
    def _json_200(self, resp, what):
        if resp.status_code != 200:
            raise ValueError("%s failed: %s" % (what, resp.text))
        return resp.json()["data"]

    def create_bosa_user(self, identifier):
        data = self._json_200(self._http.send("POST", self.api_base_url + "/users", {"X-API-Key": self.api_key},
                                              json_body={"identifier": identifier}, timeout=10), "create_user")
        for k, t in (("id", str), ("identifier", str), ("secret", str), ("secret_preview", str), ("is_active", bool)):
            if not isinstance(data.get(k), t):
                raise ValueError("CreateUserResponse: %s missing or not %s" % (k, t.__name__))
        return data

    create_user = create_bosa_user

    def authenticate_bosa_user(self, identifier, secret):
        data = self._json_200(self._http.send("POST", self.api_base_url + "/auth/tokens", {"X-API-Key": self.api_key},
                                              json_body={"identifier": identifier, "secret": secret}, timeout=10),
                              "authenticate")
        for k, t in (("token", str), ("token_type", str), ("expires_at", str), ("is_revoked", bool),
                     ("user_id", str), ("client_id", str)):
            if not isinstance(data.get(k), t):
                raise ValueError("GLToken: %s missing or not %s" % (k, t.__name__))
        return data

    authenticate = authenticate_bosa_user

    def get_user_info(self, token):
        data = self._json_200(self._http.send("GET", self.api_base_url + "/users/me",
                                              {"X-API-Key": self.api_key, "Authorization": "Bearer " + token},
                                              timeout=10), "get_user_info")
        for k in ("id", "client_id", "identifier", "secret_preview", "is_active", "integrations"):
            if k not in data:
                raise ValueError("GLUser: %s missing" % k)
        for integ in data["integrations"]:
            for k in ("id", "client_id", "user_id", "connector", "user_identifier", "selected"):
                if k not in integ:
                    raise ValueError("GLUser.integrations: %s missing" % k)
        return data

    # -- integrations (helpers/integrations.py) --
    def _auth_headers(self, token):
        return {"X-API-Key": self.api_key, "Authorization": "Bearer " + token}

    def user_has_integration(self, app, token):
        resp = self._http.send("GET", self.api_base_url + "/connectors/%s/integration-exists" % app,
                               self._auth_headers(token), timeout=10)
        body = resp.json()
        return resp.status_code == 200 and bool((body.get("data") or {}).get("has_integration"))

    def initiate_connector_auth(self, app, token, callback_uri):
        resp = self._http.send("POST", self.api_base_url + "/connectors/%s/integrations" % app,
                               self._auth_headers(token), json_body={"callback_url": callback_uri}, timeout=10)
        body = resp.json()
        if resp.status_code == 200:
            return body["data"]["url"]
        raise ValueError(body.get("message") or (body.get("error") or {}).get("message")
                         or "Failed to initiate integration")

    def initiate_plugin_configuration(self, app, token, config):
        resp = self._http.send("POST", self.api_base_url + "/connectors/%s/integrations" % app,
                               self._auth_headers(token), json_body={"auth_type": "custom", "configuration": config},
                               timeout=10)
        body = resp.json()
        if resp.status_code != 200:
            raise ValueError(body["message"])
        return body

    def _success_of(self, resp):
        data = resp.json().get("data") or {}
        return data.get("success", False), data.get("error", "success")

    def select_integration(self, app, token, user_identifier):
        return self._success_of(self._http.send(
            "POST", self.api_base_url + "/connectors/%s/integrations/%s" % (app, user_identifier),
            self._auth_headers(token), timeout=10))

    def get_integration(self, app, token, user_identifier):
        resp = self._http.send("GET", self.api_base_url + "/connectors/%s/integrations/%s" % (app, user_identifier),
                               self._auth_headers(token), timeout=10)
        return resp.json().get("data")

    def remove_integration(self, app, token, user_identifier):
        return self._success_of(self._http.send(
            "DELETE", self.api_base_url + "/connectors/%s/integrations/%s" % (app, user_identifier),
            self._auth_headers(token), timeout=10))


class BosaConnector(GLConnectors):
    """The deprecated bosa_connectors name (a subclass, same behaviour)."""
