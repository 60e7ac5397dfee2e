// Unit tests for core/bosa_catalog: action filtering, schema selection, malformed entries, lookups, validation through
// the catalog.
#include "core/bosa_catalog.hpp"

#include <doctest/doctest.h>
#include <rapidjson/document.h>

#include <chrono>
#include <string>
#include <vector>

using namespace keyway::core;

namespace {

// A discovery document shaped like BOSA's GET /connectors (docs/bosa.md).
constexpr const char* kDocument = R"({
  "github": {
    "list_pull_requests": {
      "method": "POST", "path": "/connectors/github/list_pull_requests", "docstring": "List pull requests.",
      "parameters": {"request": {"schema": {"type": "object", "properties": {"owner": {"type": "string"}}}}},
      "request_body": {"title": "ListPullRequestsRequest", "type": "object",
        "properties": {"owner": {"type": "string", "minLength": 1}, "repo": {"type": "string"},
                       "state": {"enum": ["open", "closed", "all"], "type": "string", "default": "open"},
                       "per_page": {"type": "integer", "minimum": 1, "maximum": 100, "default": 30},
                       "filter": {"anyOf": [{"$ref": "#/$defs/Filter"}, {"type": "null"}], "default": null}},
        "required": ["owner", "repo"],
        "$defs": {"Filter": {"title": "Filter", "type": "object",
                             "properties": {"since": {"type": "string", "format": "date-time"}}}}}},
    "search_commits": {
      "method": "POST", "path": "/connectors/github/search_commits", "docstring": "Only parameters.",
      "parameters": {"request": {"schema": {"type": "object", "properties": {"q": {"type": "string"}},
                                            "required": ["q"]}}}},
    "get_repo": {
      "method": "POST", "path": "/connectors/github/get_repo", "docstring": "Empty request_body falls back.",
      "parameters": {"request": {"schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}},
      "request_body": {}},
    "ping": {"method": "POST", "path": "/connectors/github/ping", "docstring": "No schema at all.", "parameters": {}},
    "upload-file": {
      "method": "POST", "path": "/connectors/github/upload-file", "docstring": "Multipart upload.", "parameters": {},
      "request_body": {"title": "UploadRequest", "type": "object",
        "properties": {"file": {"type": "string", "format": "binary"}, "name": {"type": "string"}},
        "required": ["file"]}},
    "odd_pattern": {
      "method": "POST", "path": "/connectors/github/odd_pattern", "docstring": "Backreference.", "parameters": {},
      "request_body": {"title": "Odd", "type": "object", "properties": {"x": {"type": "string", "pattern": "^(a)\\1$"}}}},
    "integration-exists": {"method": "GET", "path": "/connectors/github/integration-exists", "docstring": "d"},
    "integrations": {"method": "POST", "path": "/connectors/github/integrations", "docstring": "d", "parameters": {}},
    "integrations-select": {"method": "POST", "path": "/connectors/github/integrations/x", "docstring": "d",
                            "parameters": {}},
    "success-authorize-callback": {"method": "POST", "path": "/connectors/github/success-authorize-callback",
                                   "docstring": "d", "parameters": {}},
    "get_status": {"method": "GET", "path": "/connectors/github/get_status", "docstring": "not an action"},
    "lowercase_post": {"method": "post", "path": "/connectors/github/lowercase_post", "docstring": "SDK: not POST"},
    "no_path": {"method": "POST", "docstring": "d", "parameters": {}},
    "relative_path": {"method": "POST", "path": "connectors/github/relative_path", "docstring": "d"},
    "bad_body": {"method": "POST", "path": "/connectors/github/bad_body", "request_body": "nope"},
    "bad_request": {"method": "POST", "path": "/connectors/github/bad_request", "parameters": {"request": {"x": 1}}},
    "not_an_object": 42,
    "no_method": {"path": "/connectors/github/no_method"}
  },
  "gmail": {
    "send_email": {"method": "POST", "path": "/connectors/gmail/send_email", "docstring": "d", "parameters": {},
      "request_body": {"title": "SendEmailRequest", "type": "object",
        "properties": {"to": {"type": "array", "items": {"type": "string", "format": "email"}, "minItems": 1},
                       "subject": {"type": "string"}},
        "required": ["to"], "additionalProperties": false}}
  },
  "empty_connector": {},
  "broken": "not an object"
})";

std::shared_ptr<const BosaCatalog> load(std::string_view text = kDocument,
                                        UnenforcedPolicy policy = UnenforcedPolicy::kReport) {
  auto r = BosaCatalog::parse(text, policy);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? std::string() : r.error().message));
  return std::move(r).value();
}

std::vector<ErrorDetail> validateBody(const BosaAction& action, std::string_view body) {
  rapidjson::Document doc;
  REQUIRE(parseJsonText(body, &doc).ok());
  return validate(*action.schema, doc);
}

bool hasProblem(const BosaCatalog& catalog, const std::string& connector, const std::string& action) {
  for (const auto& p : catalog.problems()) {
    if (p.connector == connector && p.action == action && !p.message.empty()) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("bosa_catalog: actions are POST entries outside the integration routes (docs/bosa.md)") {
  const auto catalog = load();
  CHECK(catalog->connectorNames() == std::vector<std::string>{"empty_connector", "github", "gmail"});
  CHECK(catalog->actionNames("github") == std::vector<std::string>{"get_repo", "list_pull_requests", "odd_pattern",
                                                                   "ping", "search_commits", "upload-file"});
  CHECK(catalog->actionNames("gmail") == std::vector<std::string>{"send_email"});
  CHECK(catalog->actionNames("empty_connector").empty());
  CHECK(catalog->actionNames("nope").empty());
  CHECK(catalog->actionCount() == 7);
  for (const char* excluded : {"integration-exists", "integrations", "integrations-select",
                               "success-authorize-callback", "get_status", "lowercase_post"}) {
    CAPTURE(excluded);
    CHECK(catalog->find("github", excluded) == nullptr);
  }
  const BosaAction* list = catalog->find("github", "list_pull_requests");
  REQUIRE(list != nullptr);
  CHECK(list->name == "list_pull_requests");
  CHECK(list->method == "POST");
  CHECK(list->path == "/connectors/github/list_pull_requests");
  REQUIRE(list->schema.get() != nullptr);
  CHECK(list->issues.empty());
  CHECK_FALSE(list->has_binary_fields);
  CHECK(catalog->find("nope", "list_pull_requests") == nullptr);
  CHECK(catalog->find("github", "nope") == nullptr);
  REQUIRE(catalog->connector("gmail") != nullptr);
  CHECK(catalog->connector("gmail")->name == "gmail");
}

TEST_CASE("bosa_catalog: malformed entries are skipped and reported, never fatal") {
  const auto catalog = load();
  for (const char* action : {"no_path", "relative_path", "bad_body", "bad_request", "not_an_object", "no_method"}) {
    CAPTURE(action);
    CHECK(catalog->find("github", action) == nullptr);
    CHECK(hasProblem(*catalog, "github", action));
  }
  CHECK(hasProblem(*catalog, "broken", ""));
  CHECK(catalog->problems().size() == 7);
  // Integration routes and GET endpoints are expected, not problems.
  CHECK_FALSE(hasProblem(*catalog, "github", "integration-exists"));
  CHECK_FALSE(hasProblem(*catalog, "github", "get_status"));
}

TEST_CASE("bosa_catalog: schema selection: request_body with $defs, else parameters.request.schema") {
  const auto catalog = load();
  const BosaAction& list = *catalog->find("github", "list_pull_requests");
  // request_body wins over parameters: repo is required only there, and $defs resolve.
  CHECK(validateBody(list, R"({"owner":"o","repo":"r","filter":{"since":"2024-01-01T00:00:00Z"}})").empty());
  const auto errors =
      validateBody(list, R"({"owner":"","state":"merged","per_page":0,"filter":{"since":"yesterday"}})");
  CHECK(errors.size() == 5);
  bool repo_missing = false;
  bool since_bad = false;
  for (const auto& e : errors) {
    repo_missing = repo_missing || (e.pointer == "/repo" && e.reason == "required property is missing");
    since_bad = since_bad || e.pointer == "/filter/since";
  }
  CHECK(repo_missing);
  CHECK(since_bad);

  const BosaAction& search = *catalog->find("github", "search_commits");
  CHECK(validateBody(search, R"({"q":"fix"})").empty());
  REQUIRE(validateBody(search, "{}").size() == 1);
  CHECK(validateBody(search, "{}")[0].pointer == "/q");

  const BosaAction& get = *catalog->find("github", "get_repo");  // empty request_body: parameters used
  CHECK(validateBody(get, R"({"id":3})").empty());
  CHECK(validateBody(get, R"({"id":"3"})").size() == 1);

  const BosaAction& ping = *catalog->find("github", "ping");  // no schema: any JSON object
  CHECK(validateBody(ping, R"({"whatever":[1,2]})").empty());
  REQUIRE(validateBody(ping, "[1]").size() == 1);
  CHECK(validateBody(ping, "[1]")[0].reason == "expected object, got array");

  const BosaAction& send = *catalog->find("gmail", "send_email");
  const auto send_errors = validateBody(send, R"({"to":["not-an-email"],"cc":"x"})");
  REQUIRE(send_errors.size() == 2);
}

TEST_CASE("bosa_catalog: binary fields and schema issues with document pointers") {
  const auto catalog = load();
  const BosaAction& upload = *catalog->find("github", "upload-file");
  CHECK(upload.has_binary_fields);
  CHECK(validateBody(upload, R"({"file":"Zm9v","name":"a.txt"})").empty());

  const BosaAction& odd = *catalog->find("github", "odd_pattern");
  REQUIRE(odd.issues.size() == 1);
  CHECK(odd.issues[0].schema_pointer == "/github/odd_pattern/request_body/properties/x/pattern");
  CHECK(odd.issues[0].message.find("backreferences") != std::string::npos);
  CHECK(catalog->issueCount() == 1);
  CHECK(validateBody(odd, R"({"x":"anything"})").empty());  // kReport: the caller surfaces the issue

  const auto strict = load(kDocument, UnenforcedPolicy::kReject);
  const auto errors = validateBody(*strict->find("github", "odd_pattern"), R"({"x":"anything"})");
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].pointer == "/x");
}

TEST_CASE("bosa_catalog: documents that are not a JSON object fail with bad_request") {
  for (const char* text : {"", "not json", "[1,2]", "\"x\"", "{\"a\":", "null"}) {
    CAPTURE(text);
    const auto r = BosaCatalog::parse(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kBadRequest);
  }
  const auto empty = BosaCatalog::parse("{}");
  REQUIRE(empty.ok());
  CHECK((*empty)->connectorNames().empty());
  CHECK((*empty)->actionCount() == 0);
}

TEST_CASE("bosa_catalog: duplicate keys keep the first entry and are reported") {
  const auto catalog =
      load(R"({"c":{"a":{"method":"POST","path":"/x","request_body":{"type":"object","required":["one"]}},
                                     "a":{"method":"POST","path":"/y"}},
                                "c":{"b":{"method":"POST","path":"/z"}}})");
  REQUIRE(catalog->find("c", "a") != nullptr);
  CHECK(catalog->find("c", "a")->path == "/x");
  CHECK(catalog->find("c", "b") == nullptr);
  CHECK(catalog->problems().size() == 2);
}

TEST_CASE("bosa_catalog: hostile documents: deep nesting, hostile schemas, escaping in pointers") {
  std::string deep = R"({"c":{"a":{"method":"POST","path":"/p","request_body":)";
  for (int i = 0; i < 20000; ++i) deep += R"({"items":)";
  deep += "{}";
  for (int i = 0; i < 20000; ++i) deep += "}";
  deep += "}}}";
  const auto catalog = load(deep);
  const BosaAction* a = catalog->find("c", "a");
  REQUIRE(a != nullptr);
  CHECK_FALSE(a->issues.empty());

  const auto cyclic = load(R"({"c/x":{"a~b":{"method":"POST","path":"/p","request_body":{"$ref":"#","bogus":1}}}})");
  const BosaAction* c = cyclic->find("c/x", "a~b");
  REQUIRE(c != nullptr);
  REQUIRE(c->issues.size() == 1);
  CHECK(c->issues[0].schema_pointer == "/c~1x/a~0b/request_body/bogus");
  const auto errors = validateBody(*c, "{}");
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].reason.find("validation aborted") != std::string::npos);
}

TEST_CASE("bosa_catalog: a large catalog (50 connectors x 100 actions) parses quickly") {
  std::string doc = "{";
  for (int c = 0; c < 50; ++c) {
    if (c) doc += ",";
    doc += "\"conn" + std::to_string(c) + "\":{";
    for (int a = 0; a < 100; ++a) {
      if (a) doc += ",";
      const std::string name = "list_items_" + std::to_string(a);
      doc += "\"" + name + R"(":{"method":"POST","path":"/connectors/c/)" + name + R"(","docstring":"d","parameters":{},
        "request_body":{"title":"R","type":"object","properties":{"owner":{"type":"string","minLength":1},
        "repo":{"type":"string","pattern":"^[A-Za-z0-9_.-]+$"},"page":{"anyOf":[{"type":"integer","minimum":1},{"type":"null"}]},
        "filter":{"anyOf":[{"$ref":"#/$defs/F"},{"type":"null"}]}},"required":["owner","repo"],
        "$defs":{"F":{"type":"object","properties":{"since":{"type":"string","format":"date-time"}}}}}})";
    }
    doc += "}";
  }
  doc += "}";
  const auto start = std::chrono::steady_clock::now();
  const auto catalog = load(doc);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(catalog->actionCount() == 5000);
  CHECK(catalog->issueCount() == 0);
  CHECK(seconds < 10.0);
  MESSAGE("parsed and compiled 5000 actions in " << seconds << " s");
}
