// Unit tests of the request pipeline with an in-memory store, a scripted upstream client and a
// recording responder: routing, authentication, injection, error mapping, streaming decisions.
#include "core/gateway.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <utility>
#include <mutex>
#include <thread>

#include "storage/memory_cache_store.hpp"
#include "storage/memory_credential_store.hpp"
#include "tests/unit/core/gateway_fakes.hpp"

namespace keyway::core {
namespace {

using namespace keyway::core::testing;  // NOLINT: test doubles

// A cache that runs `after_get` once, right after its next lookup returned: the moment between a
// request's lookup and its check for a fill in flight.
class HookedCache final : public CacheStore {
 public:
  explicit HookedCache(std::shared_ptr<CacheStore> inner) : inner_(std::move(inner)) {}
  std::optional<CachedResponse> get(std::string_view key) override {
    auto r = inner_->get(key);
    if (auto hook = std::exchange(after_get, nullptr)) hook();
    return r;
  }
  void put(std::string_view key, const CacheEntryMeta& meta, CachedResponse response) override {
    inner_->put(key, meta, std::move(response));
  }
  size_t invalidate(std::string_view u, std::string_view id, std::string_view path) override {
    return inner_->invalidate(u, id, path);
  }
  size_t invalidatePrefix(std::string_view u, std::string_view id, std::string_view prefix) override {
    return inner_->invalidatePrefix(u, id, prefix);
  }
  size_t purge(std::string_view u, std::string_view prefix) override { return inner_->purge(u, prefix); }
  CacheStats stats() override { return inner_->stats(); }
  bool healthy() override { return inner_->healthy(); }
  std::function<void()> after_get;

 private:
  std::shared_ptr<CacheStore> inner_;
};

struct Fixture {
  explicit Fixture(bool with_cache = false, size_t max_background_refreshes = 16,
                   std::shared_ptr<SharedCache> shared = nullptr) {
    auto cfg = std::make_shared<Config>();
    cfg->upstreams.push_back(upstreamCfg("bundleup-api", Protocol::kBundleUp));
    cfg->upstreams.push_back(upstreamCfg("bundleup-proxy", Protocol::kBundleUp));
    cfg->upstreams.push_back(upstreamCfg("bundleiq", Protocol::kBundleIq));
    cfg->upstreams.push_back(upstreamCfg("bosa", Protocol::kBosa));
    cfg->cache.max_background_refreshes = max_background_refreshes;
    config = cfg;
    store = std::make_shared<storage::MemoryCredentialStore>();
    REQUIRE(store->addTeam(TeamRecord{"core", true, {}, 0}).ok());
    REQUIRE(store->addTeam(TeamRecord{"iq-only", false, {"bundleiq"}, 0}).ok());
    auto t1 = store->addClient("app1", "core");
    REQUIRE(t1.ok());
    token = std::string(t1->view());
    auto t2 = store->addClient("app2", "iq-only");
    REQUIRE(t2.ok());
    token_iq = std::string(t2->view());
    REQUIRE(store->setSecret("bundleup.api_key", "", SecretString(std::string("real-shared-key"))).ok());
    upstream = std::make_shared<FakeUpstream>();
    events = std::make_shared<NullEvents>();
    metrics = std::make_shared<Metrics>(std::vector<std::string>{"bundleup-api", "bundleup-proxy", "bundleiq", "bosa"});
    clock = std::make_shared<ManualClock>();
    if (with_cache) {
      storage::MemoryCacheStoreOptions co;
      co.clock = clock;
      cache = std::make_shared<storage::MemoryCacheStore>(co);
      hooked = std::make_shared<HookedCache>(cache);
    }
    GatewayDeps deps{store, upstream, metrics, events, clock, hooked, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    deps.shared = std::move(shared);
    gateway = std::make_unique<Gateway>(config, deps);
  }

  std::shared_ptr<RecordingResponder> call(HttpRequest req, ListenerContext ctx = {}) {
    auto r = std::make_shared<RecordingResponder>();
    gateway->handle(std::move(req), ctx, r);
    return r;
  }

  static HttpRequest get(std::string target, Headers h = {}) {
    HttpRequest r;
    r.method = "GET";
    r.target = std::move(target);
    r.headers = std::move(h);
    return r;
  }

  std::shared_ptr<const Config> config;
  std::shared_ptr<storage::MemoryCredentialStore> store;
  std::shared_ptr<FakeUpstream> upstream;
  std::shared_ptr<NullEvents> events;
  std::shared_ptr<Metrics> metrics;
  std::shared_ptr<ManualClock> clock;
  std::shared_ptr<storage::MemoryCacheStore> cache;
  std::shared_ptr<HookedCache> hooked;
  std::unique_ptr<Gateway> gateway;
  std::string token, token_iq;
};

std::string errorCodeOf(const HttpResponse& r) {
  const auto pos = r.body.find("\"code\":\"");
  if (pos == std::string::npos) return "";
  const auto end = r.body.find('"', pos + 8);
  return r.body.substr(pos + 8, end - pos - 8);
}

}  // namespace

TEST_CASE("gateway: a new config is used at once on every thread, and never another gateway's") {
  Fixture f;
  const auto first = f.gateway->config();
  CHECK(first.get() == f.config.get());
  CHECK(f.call(Fixture::get("/bundleiq/v1/notes")).get()->response.status != 404);

  // Reload without bundleiq: this thread and a new one both see it on their next request.
  auto next = std::make_shared<Config>(*f.config);
  next->upstreams.erase(next->upstreams.begin() + 2);
  f.gateway->setConfig(next);
  CHECK(f.gateway->config().get() == next.get());
  CHECK(f.call(Fixture::get("/bundleiq/v1/notes")).get()->response.status == 404);
  std::thread([&] {
    CHECK(f.gateway->config().get() == next.get());
    CHECK(f.call(Fixture::get("/bundleiq/v1/notes")).get()->response.status == 404);
  }).join();
  CHECK(first.use_count() >= 1);  // the old snapshot lives while someone holds it

  // Gateways alternating on one thread (each built and freed, maybe at the same address).
  for (int i = 0; i < 20; ++i) {
    Fixture a;
    Fixture b;
    CHECK(a.gateway->config().get() == a.config.get());
    CHECK(b.gateway->config().get() == b.config.get());
    CHECK(a.gateway->config().get() == a.config.get());
  }
}

TEST_CASE("gateway: health, ready and metrics need no token") {
  Fixture f;
  auto r = f.call(Fixture::get("/_keyway/health"));
  CHECK(r->response.status == 200);
  CHECK(r->response.body.find("ok") != std::string::npos);
  r = f.call(Fixture::get("/_keyway/ready"));
  CHECK(r->response.status == 200);
  r = f.call(Fixture::get("/_keyway/metrics"));
  CHECK(r->response.status == 200);
  CHECK(r->response.body.find("keyway_requests_total") != std::string::npos);
  r = f.call(Fixture::get("/_keyway/nope"));
  CHECK(r->response.status == 404);
  CHECK(f.upstream->requests.empty());
}

TEST_CASE("gateway: forwards byte-exact with the real key injected and the client token removed") {
  Fixture f;
  HttpRequest req = Fixture::get("/bundleup-api/v1/git/repos/acme%2Fapi/pulls/?b=2&a=1&b=1",
                                 {{"Authorization", "Bearer " + f.token},
                                  {"Content-Type", "application/json"},
                                  {"Connection", "keep-alive, X-Hop"},
                                  {"X-Hop", "1"},
                                  {"BU-Connection-Id", "conn_1"}});
  auto r = f.call(std::move(req));
  INFO(r->response.body);
  REQUIRE(f.upstream->requests.size() == 1);
  const auto& out = f.upstream->requests[0];
  CHECK(out.method == "GET");
  CHECK(out.url == "http://127.0.0.1:9/base/v1/git/repos/acme%2Fapi/pulls/?b=2&a=1&b=1");
  CHECK(headerValue(out.headers, "Authorization").value_or("") == "Bearer real-shared-key");
  CHECK(headerValue(out.headers, "BU-Connection-Id").value_or("") == "conn_1");
  CHECK(headerValue(out.headers, "Content-Type").value_or("") == "application/json");
  CHECK_FALSE(findHeader(out.headers, "Connection"));
  CHECK_FALSE(findHeader(out.headers, "X-Hop"));
  for (const auto& h : out.headers) CHECK(h.value.find(f.token) == std::string::npos);
  CHECK(r->sends == 0);  // waits for the upstream
  f.upstream->respond(0, 201, "{\"id\":1}", {{"Content-Type", "application/json"}, {"Retry-After", "3"}});
  CHECK(r->sends == 1);
  CHECK(r->response.status == 201);
  CHECK(r->response.body == "{\"id\":1}");
  CHECK(headerValue(r->response.headers, "Retry-After").value_or("") == "3");
  REQUIRE(f.events->records.size() == 1);
  CHECK(f.events->records[0].client == "app1");
  CHECK(f.events->records[0].team == "core");
  CHECK(f.events->records[0].credential == "bundleup.api_key");
  CHECK(f.events->records[0].path == "/v1/git/repos/acme%2Fapi/pulls/");
}

TEST_CASE("gateway: X-Keyway-Token wins and team secrets override shared ones") {
  Fixture f;
  REQUIRE(f.store->setSecret("bundleup.api_key", "core", SecretString(std::string("team-key"))).ok());
  f.call(Fixture::get("/bundleup-api/v1/webhooks", {{"X-Keyway-Token", f.token}, {"Authorization", "Bearer junk"}}));
  REQUIRE(f.upstream->requests.size() == 1);
  CHECK(headerValue(f.upstream->requests[0].headers, "Authorization").value_or("") == "Bearer team-key");
  CHECK_FALSE(findHeader(f.upstream->requests[0].headers, "X-Keyway-Token"));
}

TEST_CASE("gateway: 401, 403, 404, 503 and 400 never reach the upstream") {
  Fixture f;
  CHECK(f.call(Fixture::get("/bundleup-api/v1/x"))->response.status == 401);
  CHECK(f.call(Fixture::get("/bundleup-api/v1/x", {{"Authorization", "Bearer kw_unknown"}}))->response.status == 401);
  CHECK(f.call(Fixture::get("/bundleup-api/v1/x", {{"Authorization", "Bearer " + f.token_iq}}))->response.status == 403);
  auto nf = f.call(Fixture::get("/nope/v1/x", {{"Authorization", "Bearer " + f.token}}));
  CHECK(nf->response.status == 404);
  CHECK(errorCodeOf(nf->response) == "not_found");
  // BundleIQ secret missing: 503 naming the command to run.
  auto un = f.call(Fixture::get("/bundleiq/v1/notes", {{"X-Api-Key", f.token_iq}}));
  CHECK(un->response.status == 503);
  CHECK(errorCodeOf(un->response) == "unavailable");
  CHECK(un->response.body.find("keywayctl secret set bundleiq.api_key") != std::string::npos);
  for (const char* bad : {"http://evil/x", "/bundleup-api//evil.com/x", "/bundleup-api/v1/../x",
                          "/bundleup-api/v1/%2e%2E/x", "/bundleup-api/./x"}) {
    auto r = f.call(Fixture::get(bad, {{"Authorization", "Bearer " + f.token}}));
    CHECK_MESSAGE(r->response.status == 400, bad);
    CHECK(errorCodeOf(r->response) == "bad_request");
  }
  CHECK(f.upstream->requests.empty());
  // Revocation is visible at once (new store generation).
  REQUIRE(f.store->revokeClient("app1").ok());
  CHECK(f.call(Fixture::get("/bundleup-api/v1/x", {{"Authorization", "Bearer " + f.token}}))->response.status == 401);
}

TEST_CASE("gateway: compat listener serves one upstream at the root") {
  Fixture f;
  ListenerContext ctx;
  ctx.main = false;
  ctx.compat_upstream = "bundleup-api";
  f.call(Fixture::get("/v1/connections/", {{"Authorization", "Bearer " + f.token}}), ctx);
  REQUIRE(f.upstream->requests.size() == 1);
  CHECK(f.upstream->requests[0].url == "http://127.0.0.1:9/base/v1/connections/");
  // /_keyway/ is not reserved on compat ports: it is forwarded like any path.
  f.call(Fixture::get("/_keyway/health", {{"Authorization", "Bearer " + f.token}}), ctx);
  CHECK(f.upstream->requests.size() == 2);
}

TEST_CASE("gateway: upstream failures map to 502 and 504 JSON errors") {
  Fixture f;
  auto r1 = f.call(Fixture::get("/bundleup-api/v1/a", {{"Authorization", "Bearer " + f.token}}));
  auto r2 = f.call(Fixture::get("/bundleup-api/v1/b", {{"Authorization", "Bearer " + f.token}}));
  f.upstream->fail(0, UpstreamFailure::kConnectFailed);
  f.upstream->fail(1, UpstreamFailure::kTimeout);
  CHECK(r1->response.status == 502);
  CHECK(errorCodeOf(r1->response) == "upstream_unreachable");
  CHECK(r2->response.status == 504);
  CHECK(errorCodeOf(r2->response) == "upstream_timeout");
  CHECK(f.metrics->render().find("keyway_upstream_errors_total{upstream=\"bundleup-api\",kind=\"timeout\"} 1") !=
        std::string::npos);
}

TEST_CASE("gateway: event streams and large bodies are streamed, with back-pressure") {
  Fixture f;
  auto r = f.call(Fixture::get("/bundleup-api/mcp", {{"Authorization", "Bearer " + f.token}}));
  auto& obs = f.upstream->observers.at(0);
  obs->onHeaders(200, "OK", {{"Content-Type", "text/event-stream"}});
  CHECK(r->streamed);
  CHECK(obs->onBody("data: 1\n\n"));
  CHECK(r->response.body == "data: 1\n\n");
  r->pause_next = true;
  CHECK_FALSE(obs->onBody("data: 2\n\n"));  // paused
  REQUIRE(r->on_drained);
  r->on_drained();
  CHECK(f.upstream->calls[0]->resumes == 1);
  obs->onComplete(UpstreamOutcome{});
  CHECK(r->ended);

  // A client that went away cancels the upstream exchange.
  auto r2 = f.call(Fixture::get("/bundleup-api/big", {{"Authorization", "Bearer " + f.token}}));
  auto& obs2 = f.upstream->observers.at(1);
  obs2->onHeaders(200, "OK", {{"Content-Type", "application/octet-stream"}});
  CHECK_FALSE(r2->streamed);
  r2->client_gone = true;
  obs2->onBody(std::string(300 * 1024, 'x'));
  CHECK(r2->streamed);
  CHECK(f.upstream->calls[1]->cancels == 1);
}

TEST_CASE("gateway: draining answers 503") {
  Fixture f;
  f.gateway->setDraining(true);
  auto r = f.call(Fixture::get("/bundleup-api/v1/x", {{"Authorization", "Bearer " + f.token}}));
  CHECK(r->response.status == 503);
  CHECK(f.upstream->requests.empty());
}

TEST_CASE("presentedToken: per-protocol places") {
  auto bu = upstreamCfg("bundleup-api", Protocol::kBundleUp);
  auto bosa = upstreamCfg("bosa", Protocol::kBosa);
  CHECK(presentedToken({{"authorization", "bearer kw_x"}}, bu) == "kw_x");
  CHECK(presentedToken({{"Authorization", "Bearer sk-real"}}, bu).empty());
  CHECK(presentedToken({{"X-API-Key", "kw_b"}}, bosa) == "kw_b");
  CHECK(presentedToken({{"x-api-key", "kw_b"}, {"X-Keyway-Token", "kw_w"}}, bosa) == "kw_w");
  CHECK(presentedToken({{"Authorization", "Bearer kw_x"}}, bosa).empty());
}


namespace {
std::string xcache(const HttpResponse& r) { return std::string(headerValue(r.headers, "X-Keyway-Cache").value_or("")); }
}  // namespace

TEST_CASE("cache: MISS then HIT with one upstream request, Age, and per-identity keys") {
  Fixture f(true);
  const Headers auth{{"Authorization", "Bearer " + f.token}};
  auto r1 = f.call(Fixture::get("/bundleup-api/v1/connections?b=1&a=2", auth));
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 200, "[1]");
  CHECK(xcache(r1->response) == "MISS");
  f.clock->advance(std::chrono::seconds(5));
  auto r2 = f.call(Fixture::get("/bundleup-api/v1/connections?a=2&b=1", auth));  // query order ignored
  CHECK(f.upstream->requests.size() == 1);
  CHECK(xcache(r2->response) == "HIT");
  CHECK(headerValue(r2->response.headers, "Age").value_or("") == "5");
  CHECK(r2->response.body == "[1]");
  // Another connection id is another identity.
  Headers other = auth;
  other.push_back({"BU-Connection-Id", "conn_2"});
  f.call(Fixture::get("/bundleup-api/v1/connections?a=2&b=1", other));
  CHECK(f.upstream->requests.size() == 2);
  // A team with its own key never sees the shared key's entries.
  REQUIRE(f.store->setSecret("bundleup.api_key", "core", SecretString(std::string("team-key"))).ok());
  f.call(Fixture::get("/bundleup-api/v1/connections?a=2&b=1", auth));
  CHECK(f.upstream->requests.size() == 3);
  // The Proxy API is never cached.
  auto p = f.call(Fixture::get("/bundleup-proxy/user/repos", auth));
  f.upstream->respond(3, 200, "{}");
  CHECK(xcache(p->response) == "BYPASS");
}

TEST_CASE("cache: concurrent misses coalesce into one upstream request") {
  Fixture f(true);
  const Headers auth{{"Authorization", "Bearer " + f.token}};
  std::vector<std::shared_ptr<RecordingResponder>> rs;
  for (int i = 0; i < 50; ++i) rs.push_back(f.call(Fixture::get("/bundleup-api/v1/webhooks", auth)));
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 200, "[\"w\"]");
  for (auto& r : rs) {
    CHECK(r->sends == 1);
    CHECK(r->response.body == "[\"w\"]");
  }
  CHECK(f.metrics->render().find("keyway_cache_coalesced_waits_total{upstream=\"bundleup-api\"} 49") != std::string::npos);
}

TEST_CASE("cache: client no-store bypasses, no-cache refetches and stores") {
  Fixture f(true);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  f.upstream->respond(0, 200, "[1]");
  Headers ns = auth;
  ns.push_back({"Cache-Control", "no-store"});
  auto b = f.call(Fixture::get("/bundleup-api/v1/webhooks", ns));
  REQUIRE(f.upstream->requests.size() == 2);
  f.upstream->respond(1, 200, "[2]");
  CHECK(xcache(b->response) == "BYPASS");
  Headers nc = auth;
  nc.push_back({"Cache-Control", "no-cache"});
  auto m = f.call(Fixture::get("/bundleup-api/v1/webhooks", nc));
  REQUIRE(f.upstream->requests.size() == 3);
  f.upstream->respond(2, 200, "[3]");
  CHECK(xcache(m->response) == "MISS");
  auto h = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  CHECK(xcache(h->response) == "HIT");
  CHECK(h->response.body == "[3]");
}

TEST_CASE("cache: a successful write invalidates the resource and its collection") {
  Fixture f(true);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  f.call(Fixture::get("/bundleup-api/v1/webhooks?limit=5", auth));
  f.upstream->respond(0, 200, "[1]");
  HttpRequest del = Fixture::get("/bundleup-api/v1/webhooks/wh_1", auth);
  del.method = "DELETE";
  auto d = f.call(std::move(del));
  f.upstream->respond(1, 204, "");
  CHECK(xcache(d->response) == "BYPASS");
  auto r = f.call(Fixture::get("/bundleup-api/v1/webhooks?limit=5", auth));
  CHECK(f.upstream->requests.size() == 3);  // dropped: fetched again
}

TEST_CASE("cache: background refreshes are bounded per upstream; a deferred one starts on a later stale hit") {
  Fixture f(true, 2);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  auto* um = f.metrics->upstreamByName("bundleup-api");
  REQUIRE(um != nullptr);
  const char* paths[] = {"/bundleup-api/v1/webhooks?k=1", "/bundleup-api/v1/webhooks?k=2", "/bundleup-api/v1/webhooks?k=3"};
  for (size_t i = 0; i < 3; ++i) {
    f.call(Fixture::get(paths[i], auth));
    f.upstream->respond(i, 200, "[" + std::to_string(i) + "]");
  }
  REQUIRE(f.upstream->requests.size() == 3);
  f.clock->advance(std::chrono::seconds(70));  // all three stale at once (past ttl, within swr)
  for (const char* p : paths) CHECK(xcache(f.call(Fixture::get(p, auth))->response) == "STALE");
  CHECK(f.upstream->requests.size() == 5);  // two refreshes; the third found the bound full
  CHECK(um->background_refreshes.load() == 2);
  CHECK(um->background_refreshes_deferred.load() == 1);
  CHECK(f.metrics->render().find("keyway_cache_refreshes_deferred_total{upstream=\"bundleup-api\"} 1") != std::string::npos);
  // A running refresh holds its slot: the third key is still deferred.
  CHECK(xcache(f.call(Fixture::get(paths[2], auth))->response) == "STALE");
  CHECK(f.upstream->requests.size() == 5);
  CHECK(um->background_refreshes_deferred.load() == 2);
  // The first refresh ends (the client drops its observer): its slot is free again.
  f.upstream->respond(3, 200, "[10]");
  f.upstream->observers[3].reset();
  CHECK(um->background_refreshes.load() == 1);
  CHECK(f.call(Fixture::get(paths[0], auth))->response.body == "[10]");
  CHECK(xcache(f.call(Fixture::get(paths[2], auth))->response) == "STALE");
  REQUIRE(f.upstream->requests.size() == 6);
  CHECK(f.upstream->requests[5].url.find("k=3") != std::string::npos);
  // A refresh that fails gives its slot back too.
  f.upstream->fail(4, UpstreamFailure::kTimeout);
  f.upstream->observers[4].reset();
  f.upstream->respond(5, 200, "[30]");
  f.upstream->observers[5].reset();
  CHECK(um->background_refreshes.load() == 0);
  CHECK(f.call(Fixture::get(paths[2], auth))->response.body == "[30]");
}

TEST_CASE("cache: stale-while-revalidate refreshes once; stale-if-error serves stale on failure") {
  Fixture f(true);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  f.upstream->respond(0, 200, "[1]");
  f.clock->advance(std::chrono::seconds(70));  // past the 60 s ttl, within 30 s of swr
  auto s1 = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  auto s2 = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  CHECK(xcache(s1->response) == "STALE");
  CHECK(xcache(s2->response) == "STALE");
  CHECK(f.upstream->requests.size() == 2);  // exactly one background refresh
  f.upstream->respond(1, 200, "[2]");
  CHECK(f.call(Fixture::get("/bundleup-api/v1/webhooks", auth))->response.body == "[2]");
  f.clock->advance(std::chrono::seconds(600));  // past swr, within stale-if-error
  auto e = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  REQUIRE(f.upstream->requests.size() == 3);
  f.upstream->respond(2, 503, "{\"error\":\"down\"}");
  CHECK(xcache(e->response) == "STALE");
  CHECK(e->response.body == "[2]");
  auto t = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  REQUIRE(f.upstream->requests.size() == 4);
  f.upstream->fail(3, UpstreamFailure::kTimeout);
  CHECK(xcache(t->response) == "STALE");
}

TEST_CASE("cache: a client that asks again the moment it has its stale answer finds the refresh running") {
  Fixture f(true);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  f.upstream->respond(0, 200, "[1]");
  f.clock->advance(std::chrono::seconds(70));  // stale, within swr
  std::shared_ptr<RecordingResponder> again;
  auto first = std::make_shared<RecordingResponder>();
  first->on_send = [&] { again = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth)); };
  f.gateway->handle(Fixture::get("/bundleup-api/v1/webhooks", auth), {}, first);
  CHECK(xcache(first->response) == "STALE");
  REQUIRE(again.get() != nullptr);
  CHECK(xcache(again->response) == "STALE");
  CHECK(f.upstream->requests.size() == 2);  // one refresh, not one per stale answer
}

TEST_CASE("cache: a stale hit whose lookup a refresh overtook starts no second refresh") {
  Fixture f(true);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  f.upstream->respond(0, 200, "[1]");
  f.clock->advance(std::chrono::seconds(70));  // stale, within swr
  CHECK(xcache(f.call(Fixture::get("/bundleup-api/v1/webhooks", auth))->response) == "STALE");
  REQUIRE(f.upstream->requests.size() == 2);
  // The refresh lands and stores [2] after the next request read the stale entry, before it
  // looks for a refresh in flight.
  f.hooked->after_get = [&] { f.upstream->respond(1, 200, "[2]"); };
  CHECK(xcache(f.call(Fixture::get("/bundleup-api/v1/webhooks", auth))->response) == "STALE");
  CHECK(f.upstream->requests.size() == 2);
  auto fresh = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  CHECK(xcache(fresh->response) == "HIT");
  CHECK(fresh->response.body == "[2]");
}

TEST_CASE("cache: a miss whose lookup a fill overtook looks again instead of fetching twice") {
  Fixture f(true);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  auto first = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  REQUIRE(f.upstream->requests.size() == 1);
  f.hooked->after_get = [&] { f.upstream->respond(0, 200, "[1]"); };
  auto second = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  CHECK(xcache(first->response) == "MISS");
  CHECK(xcache(second->response) == "HIT");
  CHECK(second->response.body == "[1]");
  CHECK(f.upstream->requests.size() == 1);
}

// A shared cache whose answers the test gives: each call is recorded with its callback.
class FakeShared final : public SharedCache {
 public:
  struct Lookup {
    std::string key;
    CacheEntryMeta meta;
    std::function<void(SharedLookup)> done;
  };
  void lookup(const std::string& key, const CacheEntryMeta& meta, std::chrono::milliseconds,
              std::function<void(SharedLookup)> done) override {
    lookups.push_back({key, meta, std::move(done)});
  }
  void await(const std::string&, const std::string& ticket, std::chrono::milliseconds,
             std::function<void(std::optional<CachedResponse>)> done) override {
    awaits.emplace_back(ticket, std::move(done));
  }
  void store(const std::string&, const std::string& ticket, const CachedResponse& entry) override {
    stores.emplace_back(ticket, entry);
  }
  void release(const std::string&, const std::string& ticket) override { releases.push_back(ticket); }
  void invalidate(std::string_view upstream, std::string_view tag, std::vector<std::string> paths,
                  bool prefix) override {
    std::string line(upstream);
    for (const auto& p : paths) line += " " + p;
    invalidations.push_back(line + (prefix ? " prefix" : "") + (tag.empty() ? "" : " tagged"));
  }
  void answer(size_t i, SharedLookup::Outcome outcome, std::optional<CachedResponse> entry = std::nullopt,
              std::string ticket = "ticket") {
    SharedLookup r;
    r.outcome = outcome;
    r.entry = std::move(entry);
    r.ticket = std::move(ticket);
    auto done = std::move(lookups[i].done);
    done(std::move(r));
  }
  std::vector<Lookup> lookups;
  std::vector<std::pair<std::string, std::function<void(std::optional<CachedResponse>)>>> awaits;
  std::vector<std::pair<std::string, CachedResponse>> stores;
  std::vector<std::string> releases;
  std::vector<std::string> invalidations;
};

// An entry another host stored `age` ago with the default 60 s ttl and 30 s swr.
CachedResponse sharedEntry(const ManualClock& clock, std::string body, std::chrono::seconds age) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(clock.systemNow().time_since_epoch()).count();
  CachedResponse e;
  e.status = 200;
  e.reason = "OK";
  e.headers = {{"Content-Type", "application/json"}};
  e.body = std::move(body);
  e.stored_unix_ms = now - age.count() * 1000;
  e.fresh_until_unix_ms = e.stored_unix_ms + 60'000;
  e.stale_until_unix_ms = e.stored_unix_ms + 3'600'000;
  return e;
}

TEST_CASE("shared cache: an L1 miss answered by a fresh shared entry is a HIT with its age, kept in L1, no upstream") {
  auto shared = std::make_shared<FakeShared>();
  Fixture f(true, 16, shared);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  auto a = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  auto b = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));  // waits on the same flight
  REQUIRE(shared->lookups.size() == 1);
  CHECK(shared->lookups[0].meta.upstream == "bundleup-api");
  CHECK(shared->lookups[0].meta.path == "/v1/webhooks");
  CHECK(a->sends == 0);
  shared->answer(0, SharedLookup::Outcome::kFresh, sharedEntry(*f.clock, "[42]", std::chrono::seconds(5)));
  for (auto* r : {a.get(), b.get()}) {
    CHECK(xcache(r->response) == "HIT");
    CHECK(r->response.body == "[42]");
    CHECK(headerValue(r->response.headers, "Age").value_or("") == "5");
  }
  CHECK(f.upstream->requests.empty());
  auto c = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  CHECK(xcache(c->response) == "HIT");  // from L1 now
  CHECK(shared->lookups.size() == 1);
}

TEST_CASE("shared cache: the host holding the lock fetches and stores under its ticket; a failed fill releases it") {
  auto shared = std::make_shared<FakeShared>();
  Fixture f(true, 16, shared);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  auto a = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  shared->answer(0, SharedLookup::Outcome::kFill, std::nullopt, "t1");
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 200, "[1]");
  CHECK(xcache(a->response) == "MISS");
  REQUIRE(shared->stores.size() == 1);
  CHECK(shared->stores[0].first == "t1");
  CHECK(shared->stores[0].second.body == "[1]");
  CHECK(shared->releases.empty());

  auto b = f.call(Fixture::get("/bundleup-api/v1/channels", auth));
  shared->answer(1, SharedLookup::Outcome::kFill, std::nullopt, "t2");
  f.upstream->respond(1, 500, "{}");
  CHECK(b->response.status == 500);
  CHECK(shared->stores.size() == 1);
  CHECK(shared->releases == std::vector<std::string>{"t2"});
}

TEST_CASE("shared cache: another host fills: its entry is awaited; when its lock goes without one, fetched here") {
  auto shared = std::make_shared<FakeShared>();
  Fixture f(true, 16, shared);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  auto a = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  shared->answer(0, SharedLookup::Outcome::kWait, std::nullopt, "w1");
  REQUIRE(shared->awaits.size() == 1);
  CHECK(shared->awaits[0].first == "w1");
  CHECK(f.upstream->requests.empty());
  shared->awaits[0].second(sharedEntry(*f.clock, "[7]", std::chrono::seconds(0)));
  CHECK(xcache(a->response) == "HIT");
  CHECK(a->response.body == "[7]");
  CHECK(f.upstream->requests.empty());

  auto b = f.call(Fixture::get("/bundleup-api/v1/channels", auth));
  shared->answer(1, SharedLookup::Outcome::kWait, std::nullopt, "w2");
  shared->awaits[1].second(std::nullopt);
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 200, "[8]");
  CHECK(xcache(b->response) == "MISS");
  CHECK(shared->stores.empty());  // it holds no lock: nothing to store under
}

TEST_CASE("shared cache: unavailable: fetched as without it, nothing written there") {
  auto shared = std::make_shared<FakeShared>();
  Fixture f(true, 16, shared);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  auto a = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  shared->answer(0, SharedLookup::Outcome::kUnavailable);
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 200, "[1]");
  CHECK(xcache(a->response) == "MISS");
  CHECK(shared->stores.empty());
  CHECK(shared->releases.empty());
  CHECK(xcache(f.call(Fixture::get("/bundleup-api/v1/webhooks", auth))->response) == "HIT");
}

TEST_CASE("shared cache: a stale shared entry answers at once while this host refreshes it for the fleet") {
  auto shared = std::make_shared<FakeShared>();
  Fixture f(true, 16, shared);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  auto a = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  shared->answer(0, SharedLookup::Outcome::kFill, sharedEntry(*f.clock, "[old]", std::chrono::seconds(70)), "t1");
  CHECK(xcache(a->response) == "STALE");
  CHECK(a->response.body == "[old]");
  REQUIRE(f.upstream->requests.size() == 1);  // the refresh
  f.upstream->respond(0, 200, "[new]");
  REQUIRE(shared->stores.size() == 1);
  CHECK(shared->stores[0].second.body == "[new]");
  CHECK(f.call(Fixture::get("/bundleup-api/v1/webhooks", auth))->response.body == "[new]");

  // Another host refreshes: the stale copy is served and nothing is fetched here.
  auto b = f.call(Fixture::get("/bundleup-api/v1/channels", auth));
  shared->answer(1, SharedLookup::Outcome::kWait, sharedEntry(*f.clock, "[c-old]", std::chrono::seconds(70)), "w");
  CHECK(xcache(b->response) == "STALE");
  CHECK(f.upstream->requests.size() == 1);
  CHECK(shared->awaits.empty());
}

TEST_CASE("shared cache: stale-if-error with a shared copy past its swr window") {
  auto shared = std::make_shared<FakeShared>();
  Fixture f(true, 16, shared);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  auto a = f.call(Fixture::get("/bundleup-api/v1/webhooks", auth));
  shared->answer(0, SharedLookup::Outcome::kFill, sharedEntry(*f.clock, "[old]", std::chrono::seconds(600)), "t1");
  CHECK(a->sends == 0);  // too old to answer with before trying the upstream
  REQUIRE(f.upstream->requests.size() == 1);
  f.upstream->respond(0, 503, "{\"error\":\"down\"}");
  CHECK(xcache(a->response) == "STALE");
  CHECK(a->response.body == "[old]");
  CHECK(shared->releases == std::vector<std::string>{"t1"});
}

TEST_CASE("shared cache: a write invalidates there too; Cache-Control: no-cache does not read it") {
  auto shared = std::make_shared<FakeShared>();
  Fixture f(true, 16, shared);
  Headers auth{{"Authorization", "Bearer " + f.token}};
  HttpRequest del = Fixture::get("/bundleup-api/v1/webhooks/wh_1", auth);
  del.method = "DELETE";
  auto d = f.call(std::move(del));
  f.upstream->respond(0, 204, "");
  CHECK(d->response.status == 204);
  // One announcement per write: the resource and its collection, each with and without a
  // trailing slash.
  REQUIRE(shared->invalidations.size() == 1);
  CHECK(shared->invalidations[0] == "bundleup-api /v1/webhooks/wh_1 /v1/webhooks/wh_1/ /v1/webhooks /v1/webhooks/ tagged");
  Headers fresh = auth;
  fresh.push_back({"Cache-Control", "no-cache"});
  f.call(Fixture::get("/bundleup-api/v1/webhooks", fresh));
  CHECK(shared->lookups.empty());
  CHECK(f.upstream->requests.size() == 2);
}

TEST_CASE("gateway: the access record names whom it refused and why") {
  Fixture f;
  f.call(Fixture::get("/bundleup-api/v1/x", {{"X-Keyway-Token", f.token_iq}}));
  REQUIRE(f.events->records.size() == 1);
  CHECK(f.events->records[0].status == 403);
  CHECK(f.events->records[0].client == "app2");
  CHECK(f.events->records[0].team == "iq-only");
  CHECK(f.events->records[0].error == "forbidden");
  CHECK(f.events->records[0].cause == "team 'iq-only' has no access to upstream 'bundleup-api'");

  auto r = f.call(Fixture::get("/bundleup-api/v1/y", {{"X-Keyway-Token", f.token}}));
  f.upstream->fail(0, UpstreamFailure::kConnectFailed);
  REQUIRE(f.events->records.size() == 2);
  CHECK(f.events->records[1].status == 502);
  CHECK(f.events->records[1].cause.find("could not be reached (simulated)") != std::string::npos);
  CHECK(r->response.body.find(f.events->records[1].cause) != std::string::npos);

  // A path holding a client token is refused and not logged either.
  f.call(Fixture::get("/bundleup-api/v1/" + f.token + "/z", {{"X-Keyway-Token", f.token}}));
  REQUIRE(f.events->records.size() == 3);
  CHECK(f.events->records[2].status == 400);
  CHECK(f.events->records[2].path.find(f.token) == std::string::npos);
}

TEST_CASE("gateway: debug lines only when debug is on, numbered like the access record, never a secret") {
  Fixture f;
  f.call(Fixture::get("/bundleup-api/v1/x", {{"X-Keyway-Token", f.token}}));
  f.upstream->respond(0, 200, "{}");
  REQUIRE(f.events->records.size() == 1);
  CHECK(f.events->records[0].request_id == 0);
  CHECK(f.events->debug_lines.empty());

  f.events->debug_on = true;
  f.call(Fixture::get("/bundleup-api/v1/x", {{"X-Keyway-Token", f.token}}));
  f.upstream->respond(1, 200, "{}");
  REQUIRE(f.events->records.size() == 2);
  const uint64_t id = f.events->records[1].request_id;
  CHECK(id != 0);
  const std::string prefix = "#" + std::to_string(id) + " ";
  std::vector<std::string> msgs;
  for (const auto& line : f.events->debug_lines) {
    INFO(line);
    CHECK(line.rfind(prefix, 0) == 0);
    CHECK(line.find("real-shared-key") == std::string::npos);
    CHECK(line.find(f.token) == std::string::npos);
    msgs.push_back(line.substr(prefix.size(), line.find(' ', prefix.size()) - prefix.size()));
  }
  REQUIRE(f.events->debug_lines.size() == 5);
  CHECK(f.events->debug_lines[0] == prefix + "route upstream=bundleup-api via=mount path=/v1/x protocol=bundleup");
  CHECK(f.events->debug_lines[1] ==
        prefix + "client authenticated client=app1 team=core token_from=X-Keyway-Token lookup=cached");
  CHECK(f.events->debug_lines[2] ==
        prefix + "credential injected credential=bundleup.api_key scope=shared header=Authorization lookup=cached");
  CHECK(f.events->debug_lines[3].find(prefix + "cache result=BYPASS") == 0);
  CHECK(f.events->debug_lines[4].find(prefix + "upstream exchange upstream=bundleup-api status=200") == 0);
}

TEST_CASE("gateway: refuse() answers and logs a request the server could not take in") {
  Fixture f;
  HttpRequest head = Fixture::get("/bundleup-api/v1/upload", {{"X-Keyway-Token", f.token}});
  head.method = "POST";
  auto r = std::make_shared<RecordingResponder>();
  f.gateway->refuse(std::move(head), ListenerContext{}, Error::make(ErrorCode::kPayloadTooLarge, "too big"), 0, r);
  CHECK(r->response.status == 413);
  REQUIRE(f.events->records.size() == 1);
  const AccessRecord& rec = f.events->records[0];
  CHECK(rec.client == "app1");
  CHECK(rec.team == "core");
  CHECK(rec.upstream == "bundleup-api");
  CHECK(rec.method == "POST");
  CHECK(rec.path == "/v1/upload");
  CHECK(rec.error == "payload_too_large");
  CHECK(rec.cause == "too big");
  CHECK(f.metrics->rejected_requests.load() == 1);
  CHECK(f.upstream->requests.empty());

  // Nothing usable of the head (a timeout before it was read): "-", and the status asked for.
  auto t = std::make_shared<RecordingResponder>();
  f.gateway->refuse(HttpRequest{}, ListenerContext{}, Error::make(ErrorCode::kBadRequest, "too slow"), 408, t);
  CHECK(t->response.status == 408);
  CHECK(t->response.reason == "Request Timeout");
  REQUIRE(f.events->records.size() == 2);
  CHECK(f.events->records[1].method == "-");
  CHECK(f.events->records[1].client == "-");
  CHECK(f.events->records[1].status == 408);
}

TEST_CASE("gateway: /_keyway/status answers loopback clients only, and 404 without a status source") {
  Fixture f;
  // Without a status source (the default) the endpoint does not exist.
  auto r = f.call(Fixture::get("/_keyway/status"), ListenerContext{true, "", "127.0.0.1"});
  CHECK(r->response.status == 404);

  auto cfg = f.config;
  GatewayDeps deps{f.store, f.upstream, f.metrics, f.events, f.clock, nullptr, nullptr, nullptr, nullptr, nullptr};
  int renders = 0;
  deps.status = [&renders] {
    ++renders;
    return std::string("{\"version\":\"x\"}");
  };
  Gateway gateway(cfg, deps);
  auto ask = [&](const std::string& peer, const std::string& method = "GET") {
    auto responder = std::make_shared<RecordingResponder>();
    HttpRequest req = Fixture::get("/_keyway/status");
    req.method = method;
    gateway.handle(std::move(req), ListenerContext{true, "", peer}, responder);
    return responder;
  };
  for (const char* peer : {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"}) {
    CAPTURE(peer);
    r = ask(peer);
    CHECK(r->response.status == 200);
    CHECK(r->response.body == "{\"version\":\"x\"}");
    CHECK(headerValue(r->response.headers, "Cache-Control").value_or("") == "no-store");
  }
  CHECK(renders == 4);
  for (const char* peer : {"10.0.0.7", "192.168.1.127", "::ffff:10.0.0.1", "2001:db8::1", "-", ""}) {
    CAPTURE(peer);
    r = ask(peer);
    CHECK(r->response.status == 403);
    CHECK(errorCodeOf(r->response) == "forbidden");
  }
  CHECK(renders == 4);  // refused before anything was rendered
  CHECK(ask("127.0.0.1", "POST")->response.status == 400);
  CHECK(f.upstream->requests.empty());
}

TEST_CASE("config: loopback addresses") {
  for (const char* yes : {"127.0.0.1", "127.255.255.254", "::1", "[::1]", "::ffff:127.0.0.1", "[::ffff:127.0.0.9]",
                          "::FFFF:127.0.0.1"}) {
    CAPTURE(yes);
    CHECK(isLoopbackAddress(yes));
  }
  for (const char* no : {"", "-", "128.0.0.1", "10.127.0.1", "127.0.0", "127.0.0.1.5", "127..0.1", "127.0.0.1:80",
                         "127.0.0.1 ", "::2", "::ffff:10.0.0.1", "127.0.0.1234", "localhost"}) {
    CAPTURE(no);
    CHECK_FALSE(isLoopbackAddress(no));
  }
}

TEST_CASE("gateway: an upstream's health records its last answer and its last failure, with the cause") {
  Fixture f;
  UpstreamMetrics* um = f.metrics->upstreamByName("bundleup-api");
  REQUIRE(um != nullptr);
  CHECK(um->health.snapshot().last_answer_unix_ms == 0);
  CHECK(um->health.snapshot().last_failure_unix_ms == 0);
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  f.call(Fixture::get("/bundleup-api/v1/a", {{"X-Keyway-Token", f.token}}));
  f.upstream->respond(0, 401, "{}");
  auto h = um->health.snapshot();
  CHECK(h.last_answer_unix_ms >= before);
  CHECK(h.last_status == 401);
  CHECK(h.last_failure_unix_ms == 0);

  f.call(Fixture::get("/bundleup-api/v1/b", {{"X-Keyway-Token", f.token}}));
  f.upstream->fail(1, UpstreamFailure::kConnectFailed);
  h = um->health.snapshot();
  CHECK(h.last_failure_unix_ms >= before);
  CHECK(h.last_failure.find("upstream 'bundleup-api' could not be reached") != std::string::npos);
  CHECK(h.last_failure.find("real-shared-key") == std::string::npos);
  // Another upstream's health is its own.
  CHECK(f.metrics->upstreamByName("bundleiq")->health.snapshot().last_failure_unix_ms == 0);
}

TEST_CASE("metrics: upstream health is written at most once a second") {
  UpstreamHealth health;
  health.noteAnswer(200, 10'000);
  health.noteAnswer(500, 10'500);  // within the second: not recorded
  CHECK(health.snapshot().last_answer_unix_ms == 10'000);
  CHECK(health.snapshot().last_status == 200);
  health.noteAnswer(503, 11'000);
  CHECK(health.snapshot().last_answer_unix_ms == 11'000);
  CHECK(health.snapshot().last_status == 503);
  int causes = 0;
  health.noteFailure(UpstreamErrorKind::kTimeout, 20'000, [&] { ++causes; return std::string("first"); });
  health.noteFailure(UpstreamErrorKind::kTimeout, 20'999, [&] { ++causes; return std::string("second"); });
  CHECK(causes == 1);  // the cause is only built for the failure recorded
  CHECK(health.snapshot().last_failure == "first");
  health.noteFailure(UpstreamErrorKind::kTimeout, 19'000, [&] { ++causes; return std::string("clock went back"); });
  CHECK(health.snapshot().last_failure == "clock went back");
}

}  // namespace keyway::core
