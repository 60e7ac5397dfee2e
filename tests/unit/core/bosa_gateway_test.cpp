// Unit tests of the BOSA part of the request pipeline: discovery from the schema service,
// validation before forwarding, user handles and token minting, Content-Type on responses.
#include <doctest/doctest.h>

#include "core/bosa_service.hpp"
#include "core/gateway.hpp"
#include "storage/memory_credential_store.hpp"
#include "tests/unit/core/gateway_fakes.hpp"

namespace keyway::core {
namespace {

using namespace keyway::core::testing;  // NOLINT: test doubles

const char* kDoc = R"({"github": {
  "list_pull_requests": {"method": "POST", "path": "/connectors/github/list_pull_requests", "docstring": "d",
    "parameters": {}, "request_body": {"title": "R", "type": "object", "required": ["owner"],
      "properties": {"owner": {"type": "string", "minLength": 1},
                     "state": {"anyOf": [{"enum": ["open", "closed"]}, {"type": "null"}], "default": null},
                     "page": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}}}},
  "create_issue": {"method": "POST", "path": "/connectors/github/create_issue", "docstring": "d",
    "parameters": {}, "request_body": {"title": "C", "type": "object", "required": ["title"],
      "properties": {"title": {"type": "string"}}}},
  "integration-exists": {"method": "GET", "path": "/connectors/github/integration-exists", "docstring": "d",
    "parameters": {}}},
 "gmail": {"send_email": {"method": "POST", "path": "/connectors/gmail/send_email", "docstring": "d",
    "parameters": {}}}})";

// A schema store the test can look into.
class RecordingSchemaStore final : public SchemaStore {
 public:
  Result<std::optional<StoredSchemas>> load(std::string_view) override { return stored; }
  Status save(std::string_view, const StoredSchemas& s) override {
    stored = s;
    ++saves;
    ++generation_;
    return okStatus();
  }
  uint64_t generation() override { return generation_; }
  std::optional<StoredSchemas> stored;
  int saves = 0;
  uint64_t generation_ = 1;
};

struct BosaFixture {
  BosaFixture() {
    auto cfg = std::make_shared<Config>();
    cfg->upstreams.push_back(upstreamCfg("bosa", Protocol::kBosa));
    config = cfg;
    store = std::make_shared<storage::MemoryCredentialStore>();
    REQUIRE(store->addTeam(TeamRecord{"core", true, {}, 0}).ok());
    REQUIRE(store->addTeam(TeamRecord{"other", true, {}, 0}).ok());
    auto t1 = store->addClient("app1", "core");
    REQUIRE(t1.ok());
    token = std::string(t1->view());
    auto t2 = store->addClient("app2", "other");
    REQUIRE(t2.ok());
    token_other = std::string(t2->view());
    REQUIRE(store->setSecret("bosa.api_key", "", SecretString(std::string("sk-client-real"))).ok());
    REQUIRE(store->addBosaUser("alice", SecretString(std::string("sk-user-alice-secret")), {"core"}).ok());
    upstream = std::make_shared<FakeUpstream>();
    events = std::make_shared<NullEvents>();
    metrics = std::make_shared<Metrics>(std::vector<std::string>{"bosa"});
    clock = std::make_shared<ManualClock>();
    schemas = std::make_shared<RecordingSchemaStore>();
    GatewayDeps deps{store, upstream, metrics, events, clock, nullptr, nullptr, schemas, nullptr, nullptr};
    gateway = std::make_unique<Gateway>(config, deps);
  }

  std::shared_ptr<RecordingResponder> call(std::string method, std::string target, Headers h = {},
                                           std::string body = "") {
    HttpRequest r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.headers = std::move(h);
    r.body = std::move(body);
    auto responder = std::make_shared<RecordingResponder>();
    gateway->handle(std::move(r), ListenerContext{}, responder);
    return responder;
  }

  // Stores the discovery document as if fetched earlier.
  void storeDoc(int64_t fetched_unix_ms = 0) {
    schemas->stored = StoredSchemas{kDoc, fetched_unix_ms != 0 ? fetched_unix_ms : nowMs()};
  }
  int64_t nowMs() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock->systemNow().time_since_epoch()).count();
  }

  std::shared_ptr<const Config> config;
  std::shared_ptr<storage::MemoryCredentialStore> store;
  std::shared_ptr<FakeUpstream> upstream;
  std::shared_ptr<NullEvents> events;
  std::shared_ptr<Metrics> metrics;
  std::shared_ptr<ManualClock> clock;
  std::shared_ptr<RecordingSchemaStore> schemas;
  std::unique_ptr<Gateway> gateway;
  std::string token, token_other;
};

}  // namespace

TEST_CASE("BOSA discovery is served without a token, from one fetch shared by concurrent callers") {
  BosaFixture f;
  auto a = f.call("GET", "/bosa/connectors/?modules=github");
  auto b = f.call("GET", "/bosa/connectors/names");
  REQUIRE(f.upstream->requests.size() == 1);
  const UpstreamRequest& fetch = f.upstream->requests[0];
  CHECK(fetch.method == "GET");
  CHECK(fetch.url == "http://127.0.0.1:9/base/connectors");
  CHECK_FALSE(headerValue(fetch.headers, "X-API-Key"));
  CHECK_FALSE(headerValue(fetch.headers, "Authorization"));
  CHECK(a->sends == 0);
  f.upstream->respond(0, 200, kDoc);
  REQUIRE(a->sends == 1);
  REQUIRE(b->sends == 1);
  CHECK(a->response.status == 200);
  CHECK(a->response.body.find("\"github\":{") == 1);
  CHECK(a->response.body.find("gmail") == std::string::npos);
  CHECK(a->response.body.find("\"path\":\"/connectors/github/list_pull_requests\"") != std::string::npos);
  CHECK(headerValue(a->response.headers, "X-Keyway-Cache") == std::optional<std::string_view>("HIT"));
  CHECK(b->response.body == R"(["github","gmail"])");
  CHECK(f.schemas->saves == 1);
  CHECK(f.metrics->schema_refreshes.load() == 1);

  auto full = f.call("GET", "/bosa/connectors");
  CHECK(full->response.body == kDoc);  // byte for byte as the upstream sent it
  auto unknown = f.call("GET", "/bosa/connectors/?modules=nosuch");
  // An unknown module waits for one refresh (the last attempt is recent: none now), then {}.
  CHECK(f.upstream->requests.size() == 1);
  CHECK(unknown->response.body == "{}");
}

TEST_CASE("BOSA discovery with nothing stored and the upstream down is a 503, and fails fast afterwards") {
  BosaFixture f;
  auto a = f.call("GET", "/bosa/connectors/names");
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->fail(0, UpstreamFailure::kConnectFailed);
  REQUIRE(a->sends == 1);
  CHECK(a->response.status == 503);
  CHECK(a->response.body.find("\"unavailable\"") != std::string::npos);
  auto b = f.call("GET", "/bosa/connectors/names");
  CHECK(b->response.status == 503);
  CHECK(f.upstream->requests.size() == 1);  // within the back-off: no second doomed fetch
  CHECK(f.metrics->schema_refresh_failures.load() == 1);
}

TEST_CASE("BOSA stored schemas serve at once; past the TTL one background refresh runs and a failure keeps them") {
  BosaFixture f;
  f.storeDoc(f.nowMs() - 2 * 3600 * 1000);  // two hours old, TTL 1 h
  auto a = f.call("GET", "/bosa/connectors/names");
  REQUIRE(a->sends == 1);
  CHECK(a->response.body == R"(["github","gmail"])");
  CHECK(headerValue(a->response.headers, "Age") == std::optional<std::string_view>("7200"));
  REQUIRE(f.upstream->requests.size() == 1);  // the background refresh
  auto b = f.call("GET", "/bosa/connectors/names");
  CHECK(b->sends == 1);
  CHECK(f.upstream->requests.size() == 1);  // one refresh at a time
  f.upstream->fail(0, UpstreamFailure::kTimeout);
  auto c = f.call("POST", "/bosa/connectors/github/create_issue", {{"X-API-Key", f.token}}, "{}");
  CHECK(c->response.status == 422);  // still validating from the stored schemas
}

TEST_CASE("BOSA action bodies are validated before anything leaves the host") {
  BosaFixture f;
  f.storeDoc();
  const Headers auth{{"X-API-Key", f.token}, {"Content-Type", "application/json"}};

  auto missing = f.call("POST", "/bosa/connectors/github/list_pull_requests", auth, R"({"state":"merged","page":0})");
  REQUIRE(missing->sends == 1);
  CHECK(missing->response.status == 422);
  const std::string& body = missing->response.body;
  CHECK(body.find("\"invalid_parameters\"") != std::string::npos);
  CHECK(body.find("\"pointer\":\"/owner\"") != std::string::npos);
  CHECK(body.find("\"pointer\":\"/state\"") != std::string::npos);
  CHECK(body.find("\"pointer\":\"/page\"") != std::string::npos);
  CHECK(f.metrics->upstreamByName("bosa")->validation_failures.load() == 1);

  auto not_json = f.call("POST", "/bosa/connectors/github/list_pull_requests", auth, "{owner:");
  CHECK(not_json->response.status == 400);
  CHECK(not_json->response.body.find("not valid JSON") != std::string::npos);

  auto no_action = f.call("POST", "/bosa/connectors/github/delete_repo", auth, "{}");
  CHECK(no_action->response.status == 404);
  CHECK(no_action->response.body.find("available actions: create_issue, list_pull_requests") != std::string::npos);
  auto no_connector = f.call("POST", "/bosa/connectors/jira/list_issues", auth, "{}");
  // An unknown connector may be new upstream: one refresh, then the answer.
  REQUIRE(f.upstream->requests.size() == 1);
  CHECK(no_connector->sends == 0);
  f.upstream->respond(0, 200, kDoc);
  CHECK(no_connector->response.status == 404);
  CHECK(no_connector->response.body.find("available connectors: github, gmail") != std::string::npos);

  CHECK(f.upstream->requests.size() == 1);  // only the refresh for the unknown connector 'jira'
  CHECK(f.upstream->requests[0].url == "http://127.0.0.1:9/base/connectors");

  auto ok = f.call("POST", "/bosa/connectors/github/create_issue",
                   {{"X-API-Key", f.token}, {"X-Bosa-Integration", "octocat"}}, R"({"title":"t"})");
  REQUIRE(f.upstream->requests.size() == 2);
  const UpstreamRequest& sent = f.upstream->requests[1];
  CHECK(sent.url == "http://127.0.0.1:9/base/connectors/github/create_issue");
  CHECK(headerValue(sent.headers, "X-API-Key") == std::optional<std::string_view>("sk-client-real"));
  CHECK(headerValue(sent.headers, "X-Bosa-Integration") == std::optional<std::string_view>("octocat"));
  CHECK(sent.body == R"({"title":"t"})");
  // A response without Content-Type reaches the client with one (the SDK needs it).
  f.upstream->respond(1, 200, "raw", {});
  CHECK(headerValue(ok->response.headers, "Content-Type") == std::optional<std::string_view>("application/octet-stream"));
}

TEST_CASE("BOSA multipart and form bodies are forwarded intact without JSON validation") {
  BosaFixture f;
  f.storeDoc();
  const std::string multipart = "--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nx\r\n--b--\r\n";
  f.call("POST", "/bosa/connectors/github/create_issue",
         {{"X-API-Key", f.token}, {"Content-Type", "multipart/form-data; boundary=b"}}, multipart);
  REQUIRE(f.upstream->requests.size() == 1);
  CHECK(f.upstream->requests[0].body == multipart);
}

TEST_CASE("BOSA user handles become minted tokens, minted once for concurrent requests and reused") {
  BosaFixture f;
  f.storeDoc();
  auto a = f.call("POST", "/bosa/connectors/github/create_issue",
                  {{"X-API-Key", f.token}, {"Authorization", "Bearer kwu_alice"}}, R"({"title":"a"})");
  auto b = f.call("POST", "/bosa/connectors/github/create_issue",
                  {{"X-Keyway-Token", f.token}, {"X-Keyway-User", "alice"}}, R"({"title":"b"})");
  REQUIRE(f.upstream->requests.size() == 1);
  const UpstreamRequest& mint = f.upstream->requests[0];
  CHECK(mint.method == "POST");
  CHECK(mint.url == "http://127.0.0.1:9/base/auth/tokens");
  CHECK(headerValue(mint.headers, "X-API-Key") == std::optional<std::string_view>("sk-client-real"));
  CHECK(mint.body == R"({"identifier":"alice","secret":"sk-user-alice-secret"})");
  f.upstream->respond(0, 200,
                      R"({"data":{"token":"jwt-1","token_type":"Bearer","expires_at":"2099-01-01T00:00:00.5",)"
                      R"("is_revoked":false,"user_id":"u","client_id":"c"},"meta":null})");
  REQUIRE(f.upstream->requests.size() == 3);
  for (size_t i = 1; i < 3; ++i) {
    const auto& r = f.upstream->requests[i];
    CHECK(headerValue(r.headers, "Authorization") == std::optional<std::string_view>("Bearer jwt-1"));
    CHECK_FALSE(headerValue(r.headers, "X-Keyway-User"));
    for (const auto& h : r.headers) CHECK(h.value.find("kw") != 0);
  }
  CHECK(f.metrics->token_mints.load() == 1);
  auto stored = f.store->findUserToken("alice");
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  CHECK((*stored)->token.view() == "jwt-1");

  f.call("POST", "/bosa/connectors/github/create_issue", {{"X-API-Key", f.token}, {"X-Keyway-User", "alice"}},
         R"({"title":"c"})");
  REQUIRE(f.upstream->requests.size() == 4);
  CHECK(headerValue(f.upstream->requests[3].headers, "Authorization") == std::optional<std::string_view>("Bearer jwt-1"));
  CHECK(f.metrics->token_mints.load() == 1);
}

TEST_CASE("BOSA: a kept user token is dropped when the user's secret changes; other writes keep it") {
  BosaFixture f;
  f.storeDoc();
  const Headers as_alice = {{"X-API-Key", f.token}, {"X-Keyway-User", "alice"}};
  f.call("POST", "/bosa/connectors/github/create_issue", as_alice, R"({"title":"a"})");
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 200, R"({"data":{"token":"jwt-old","expires_at":"2099-01-01T00:00:00"}})");
  REQUIRE(f.upstream->requests.size() == 2);

  // An unrelated write: the kept token stays.
  REQUIRE(f.store->setSecret("unrelated", "", SecretString(std::string("v"))).ok());
  f.call("POST", "/bosa/connectors/github/create_issue", as_alice, R"({"title":"b"})");
  REQUIRE(f.upstream->requests.size() == 3);
  CHECK(headerValue(f.upstream->requests[2].headers, "Authorization") ==
        std::optional<std::string_view>("Bearer jwt-old"));
  CHECK(f.metrics->token_mints.load() == 1);

  // keywayctl bosa-user set-secret (another process in real life): the next request mints anew.
  REQUIRE(f.store->setBosaUserSecret("alice", SecretString(std::string("sk-user-alice-NEW"))).ok());
  f.call("POST", "/bosa/connectors/github/create_issue", as_alice, R"({"title":"c"})");
  REQUIRE(f.upstream->requests.size() == 4);
  CHECK(f.upstream->requests[3].url == "http://127.0.0.1:9/base/auth/tokens");
  CHECK(f.upstream->requests[3].body == R"({"identifier":"alice","secret":"sk-user-alice-NEW"})");
  f.upstream->respond(3, 200, R"({"data":{"token":"jwt-new","expires_at":"2099-01-01T00:00:00"}})");
  REQUIRE(f.upstream->requests.size() == 5);
  CHECK(headerValue(f.upstream->requests[4].headers, "Authorization") ==
        std::optional<std::string_view>("Bearer jwt-new"));
  CHECK(f.metrics->token_mints.load() == 2);
}

TEST_CASE("BOSA tokens near expiry are re-minted; refused users and secrets are 403") {
  BosaFixture f;
  f.storeDoc();
  f.call("POST", "/bosa/connectors/github/create_issue", {{"X-API-Key", f.token}, {"X-Keyway-User", "alice"}},
         R"({"title":"a"})");
  REQUIRE(f.upstream->requests.size() == 1);
  // expires 90 s from the fixture's clock; the margin is 60 s.
  const int64_t exp = f.clock->unixSeconds() + 90;
  std::time_t t = static_cast<std::time_t>(exp);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char iso[32];
  std::strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
  f.upstream->respond(0, 200, std::string(R"({"data":{"token":"jwt-short","expires_at":")") + iso + "\"}}");
  REQUIRE(f.upstream->requests.size() == 2);
  f.clock->advance(std::chrono::seconds(40));  // 50 s left < margin
  f.call("POST", "/bosa/connectors/github/create_issue", {{"X-API-Key", f.token}, {"X-Keyway-User", "alice"}},
         R"({"title":"b"})");
  REQUIRE(f.upstream->requests.size() == 3);
  CHECK(f.upstream->requests[2].url == "http://127.0.0.1:9/base/auth/tokens");

  auto other_team = f.call("POST", "/bosa/connectors/github/create_issue",
                           {{"X-API-Key", f.token_other}, {"X-Keyway-User", "alice"}}, R"({"title":"x"})");
  auto unknown = f.call("POST", "/bosa/connectors/github/create_issue",
                        {{"X-API-Key", f.token}, {"Authorization", "Bearer kwu_mallory"}}, R"({"title":"x"})");
  CHECK(other_team->response.status == 403);
  CHECK(unknown->response.status == 403);
  CHECK(f.upstream->requests.size() == 3);

  // The refusals name the user; the client's message names both commands, the record the one
  // that applies (alice is known, not granted to "other"; mallory is unknown).
  CHECK(other_team->response.body.find("keywayctl bosa-user add alice --team other") != std::string::npos);
  CHECK(other_team->response.body.find("keywayctl bosa-user grant alice --team other") != std::string::npos);
  REQUIRE(f.events->records.size() == 2);
  CHECK(f.events->records[0].user == "alice");
  CHECK(f.events->records[0].team == "other");
  CHECK(f.events->records[0].cause == "BOSA user 'alice' is not granted to team 'other'; an operator can run: "
                                     "keywayctl bosa-user grant alice --team other");
  CHECK(f.events->records[1].user == "mallory");
  CHECK(f.events->records[1].cause == "BOSA user 'mallory' is unknown to keyway; an operator can run: "
                                     "keywayctl bosa-user add mallory --team core");

  // BOSA refusing the stored secret is a 403 too, never the upstream's body; the operator gets a
  // warn line naming the user and why, never the secret.
  f.upstream->respond(2, 401, R"({"error":{"message":"bad secret"}})");
  CHECK(f.metrics->token_mint_failures.load() == 1);
  REQUIRE(f.events->warnings.size() == 1);
  CHECK(f.events->warnings[0].find("BOSA user token mint failed upstream=bosa user=alice cause=BOSA refused the "
                                   "stored secret of user 'alice' (status 401)") == 0);
  CHECK(f.events->warnings[0].find("sk-user-alice-secret") == std::string::npos);
  REQUIRE(f.events->records.size() == 3);
  CHECK(f.events->records[2].user == "alice");
  CHECK(f.events->records[2].error == "forbidden");
}

TEST_CASE("BOSA: the record says how the user token was had; a kw_ bearer gets where the token goes") {
  BosaFixture f;
  f.storeDoc();
  const Headers as_alice{{"X-API-Key", f.token}, {"Authorization", "Bearer kwu_alice"}};
  f.call("POST", "/bosa/connectors/github/create_issue", as_alice, R"({"title":"a"})");
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 200, R"({"data":{"token":"jwt-1","expires_at":"2999-01-01T00:00:00"}})");
  REQUIRE(f.upstream->requests.size() == 2);
  f.upstream->respond(1, 200, "{}");
  f.call("POST", "/bosa/connectors/github/create_issue", as_alice, R"({"title":"b"})");
  REQUIRE(f.upstream->requests.size() == 3);
  f.upstream->respond(2, 200, "{}");
  REQUIRE(f.events->records.size() == 2);
  CHECK(f.events->records[0].user_token == "minted");
  CHECK(f.events->records[1].user_token == "kept");
  CHECK(f.events->records[1].credential == "bosa.api_key");

  auto bearer = f.call("POST", "/bosa/connectors/github/create_issue",
                       {{"Authorization", "Bearer " + f.token}}, R"({"title":"c"})");
  CHECK(bearer->response.status == 401);
  CHECK(bearer->response.body.find("takes the keyway client token as X-API-Key: kw_... or X-Keyway-Token: kw_...") !=
        std::string::npos);
  CHECK(bearer->response.body.find(f.token) == std::string::npos);
  CHECK(f.upstream->requests.size() == 3);

  // A client token where the user goes is refused, and neither echoed nor logged.
  auto token_as_user = f.call("POST", "/bosa/connectors/github/create_issue",
                              {{"X-API-Key", f.token}, {"X-Keyway-User", f.token}}, R"({"title":"d"})");
  CHECK(token_as_user->response.status == 400);
  CHECK(token_as_user->response.body.find(f.token) == std::string::npos);
  const AccessRecord& rec = f.events->records.back();
  CHECK(rec.status == 400);
  CHECK(rec.user.find(f.token) == std::string::npos);
  CHECK(rec.cause.find(f.token) == std::string::npos);
  CHECK(f.upstream->requests.size() == 3);
}

TEST_CASE("BOSA: debug lines follow route, user, validation and token, never a secret or token") {
  BosaFixture f;
  f.storeDoc();
  f.events->debug_on = true;
  f.call("POST", "/bosa/connectors/github/create_issue", {{"X-API-Key", f.token}, {"X-Keyway-User", "alice"}},
         R"({"title":"a"})");
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 200, R"({"data":{"token":"jwt-secret-1","expires_at":"2999-01-01T00:00:00"}})");
  REQUIRE(f.upstream->requests.size() == 2);
  f.upstream->respond(1, 200, "{}");
  REQUIRE(f.events->records.size() == 1);
  const std::string prefix = "#" + std::to_string(f.events->records[0].request_id) + " ";
  std::string all;
  for (const auto& line : f.events->debug_lines) all += line + "\n";
  INFO(all);
  CHECK(all.find(prefix + "bosa route kind=action connector=github action=create_issue canonical=1") !=
        std::string::npos);
  CHECK(all.find(prefix + "bosa user asked for user=alice from=X-Keyway-User") != std::string::npos);
  CHECK(all.find(prefix + "bosa validation action=create_issue result=valid") != std::string::npos);
  CHECK(all.find(prefix + "bosa user token user=alice token=minted") != std::string::npos);
  CHECK(all.find(prefix + "upstream exchange upstream=bosa status=200") != std::string::npos);
  // Positive control: the secrets and the minted token went upstream, and into no debug line.
  CHECK(f.upstream->requests[0].body.find("sk-user-alice-secret") != std::string::npos);
  bool token_sent = false;
  for (const auto& h : f.upstream->requests[1].headers) token_sent |= h.value == "Bearer jwt-secret-1";
  CHECK(token_sent);
  for (const char* secret : {"sk-user-alice-secret", "sk-client-real", "jwt-secret-1"}) {
    CHECK(all.find(secret) == std::string::npos);
  }
  CHECK(all.find(f.token) == std::string::npos);
}

TEST_CASE("BOSA: a bearer that is not a kwu_ handle passes through; a kw_ client token never does") {
  BosaFixture f;
  f.call("GET", "/bosa/users/me", {{"X-Keyway-Token", f.token}, {"Authorization", "Bearer eyJreal.jwt"}});
  f.call("GET", "/bosa/users/me", {{"X-API-Key", "placeholder"}, {"X-Keyway-Token", f.token},
                                   {"Authorization", "Bearer " + f.token}});
  REQUIRE(f.upstream->requests.size() == 2);
  CHECK(headerValue(f.upstream->requests[0].headers, "Authorization") ==
        std::optional<std::string_view>("Bearer eyJreal.jwt"));
  CHECK_FALSE(headerValue(f.upstream->requests[1].headers, "Authorization"));
  CHECK(headerValue(f.upstream->requests[1].headers, "X-API-Key") == std::optional<std::string_view>("sk-client-real"));
}

TEST_CASE("parseBosaTimestamp reads naive ISO as UTC and refuses garbage") {
  CHECK(parseBosaTimestamp("1970-01-01T00:01:40") == std::optional<int64_t>(100));
  CHECK(parseBosaTimestamp("2025-07-31T20:20:01.970582") == std::optional<int64_t>(1753993201));
  CHECK(parseBosaTimestamp("2025-07-31T20:20:01Z") == std::optional<int64_t>(1753993201));
  CHECK(parseBosaTimestamp("2025-07-31T22:20:01+02:00") == std::optional<int64_t>(1753993201));
  CHECK_FALSE(parseBosaTimestamp("2025-07-31"));
  CHECK_FALSE(parseBosaTimestamp("2025-13-31T20:20:01"));
  CHECK_FALSE(parseBosaTimestamp("2025-07-31T20:20:01.x"));
  CHECK_FALSE(parseBosaTimestamp(""));
}

TEST_CASE("bosaModulesQuery and isBosaDiscoveryPath") {
  CHECK(bosaModulesQuery("modules=github") == std::vector<std::string>{"github"});
  CHECK(bosaModulesQuery("x=1&modules=github%2Cgmail&modules=github") == std::vector<std::string>{"github", "gmail"});
  CHECK(bosaModulesQuery("") == std::vector<std::string>{});
  CHECK(isBosaDiscoveryPath("/connectors/"));
  CHECK_FALSE(isBosaDiscoveryPath("/connectors/github"));
}

}  // namespace keyway::core
