// BOSA schema service: store-backed discovery documents, coalesced fetches, background refresh.
#include "core/bosa_service.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>

#include "core/json_schema.hpp"
#include "core/text.hpp"

namespace keyway::core {

namespace {

constexpr std::string_view kConnectors = "/connectors";
// A connector a client asked for that the stored document lacks triggers a refresh at most this
// often: a typo in an app name must not turn every SDK start into an upstream fetch.
constexpr std::chrono::seconds kMissingRefreshInterval{30};
// With nothing stored and the upstream down, callers fail fast for this long after a failed fetch
// instead of each starting one more doomed fetch.
constexpr std::chrono::seconds kFailedFetchBackoff{2};
// Discovery documents are fetched in the background; the SDK's own timeout is 30 s.
constexpr std::chrono::milliseconds kFetchTimeout{30000};

int64_t unixMsNow(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock.systemNow().time_since_epoch()).count();
}

std::string serialise(const rapidjson::Value& v) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  v.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

const BosaAction* BosaSnapshot::actionForPath(std::string_view path) const {
  if (path.substr(0, kConnectors.size() + 1) == "/connectors/") {
    std::string_view rest = path.substr(kConnectors.size() + 1);
    const size_t slash = rest.find('/');
    if (slash != std::string_view::npos && rest.find('/', slash + 1) == std::string_view::npos) {
      if (const BosaAction* a = catalog->find(rest.substr(0, slash), rest.substr(slash + 1))) return a;
    }
  }
  auto it = by_path.find(path);
  if (it == by_path.end()) return nullptr;
  return catalog->find(it->second.first, it->second.second);
}

Result<std::shared_ptr<const BosaSnapshot>> makeBosaSnapshot(std::string document, int64_t fetched_unix_ms) {
  auto catalog = BosaCatalog::parse(document);
  if (!catalog.ok()) return catalog.error();
  rapidjson::Document doc;
  if (auto st = parseJsonText(document, &doc); !st.ok() || !doc.IsObject()) {
    return Error::make(ErrorCode::kBadRequest, "the discovery document is not a JSON object");
  }
  auto snap = std::make_shared<BosaSnapshot>();
  snap->catalog = std::move(catalog).value();
  snap->fetched_unix_ms = fetched_unix_ms;
  rapidjson::StringBuffer names_buffer;
  rapidjson::Writer<rapidjson::StringBuffer> names(names_buffer);
  names.StartArray();
  for (auto m = doc.MemberBegin(); m != doc.MemberEnd(); ++m) {
    if (!m->value.IsObject()) continue;
    const std::string name(m->name.GetString(), m->name.GetStringLength());
    if (snap->connector_json.count(name) != 0) continue;  // duplicate key: the catalog kept the first
    names.String(m->name.GetString(), m->name.GetStringLength());
    snap->connector_json.emplace(name, serialise(m->value));
    if (const BosaConnector* c = snap->catalog->connector(name)) {
      for (const auto& [action_name, action] : c->actions) {
        snap->by_path.emplace(action.path, std::make_pair(name, action_name));
      }
    }
  }
  names.EndArray();
  snap->names_json.assign(names_buffer.GetString(), names_buffer.GetSize());
  snap->document = std::move(document);
  return std::shared_ptr<const BosaSnapshot>(std::move(snap));
}

bool isBosaDiscoveryPath(std::string_view path) {
  return path == "/connectors" || path == "/connectors/" || path == "/connectors/names";
}

std::vector<std::string> bosaModulesQuery(std::string_view query) {
  std::vector<std::string> out;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t eq = part.find('=');
    if (eq == std::string_view::npos || formDecode(part.substr(0, eq)) != "modules") continue;
    std::string value = formDecode(part.substr(eq + 1));
    size_t start = 0;
    while (start <= value.size()) {
      size_t comma = value.find(',', start);
      if (comma == std::string::npos) comma = value.size();
      std::string name = value.substr(start, comma - start);
      while (!name.empty() && name.front() == ' ') name.erase(name.begin());
      while (!name.empty() && name.back() == ' ') name.pop_back();
      if (!name.empty() && std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
      start = comma + 1;
    }
  }
  return out;
}

HttpResponse bosaDiscoveryResponse(const BosaSnapshot& snapshot, std::string_view path,
                                   const std::vector<std::string>& modules, int64_t now_unix_ms) {
  HttpResponse r;
  r.status = 200;
  r.headers.push_back({"Content-Type", "application/json"});
  r.headers.push_back({"X-Keyway-Cache", "HIT"});
  const int64_t age_ms = now_unix_ms - snapshot.fetched_unix_ms;
  r.headers.push_back({"Age", std::to_string(age_ms > 0 ? age_ms / 1000 : 0)});
  if (path == "/connectors/names") {
    r.body = snapshot.names_json;
  } else if (modules.empty()) {
    r.body = snapshot.document;
  } else {
    // The connectors' objects as stored (re-serialised: only whitespace and number spelling may
    // differ from the upstream's bytes); an unknown name is absent, as the upstream would have it.
    r.body = "{";
    bool first = true;
    for (const auto& m : modules) {
      auto it = snapshot.connector_json.find(m);
      if (it == snapshot.connector_json.end()) continue;
      rapidjson::StringBuffer key;
      rapidjson::Writer<rapidjson::StringBuffer> w(key);
      w.String(m.data(), static_cast<rapidjson::SizeType>(m.size()));
      if (!first) r.body += ',';
      first = false;
      r.body.append(key.GetString(), key.GetSize()).append(":").append(it->second);
    }
    r.body += '}';
  }
  return r;
}

// --- the service ---------------------------------------------------------------------------------

struct BosaSchemaService::State {
  std::mutex mu;
  std::shared_ptr<const BosaSnapshot> snapshot;
  bool loaded = false;                  // the store has been read at least once
  uint64_t store_generation = 0;        // the store generation that read saw
  std::chrono::steady_clock::time_point last_generation_check{};
  bool fetching = false;
  bool attempted = false;
  bool last_failed = false;
  std::chrono::steady_clock::time_point last_attempt{};
  std::vector<Callback> waiters;
};

class SchemaFetchObserver final : public UpstreamObserver {
 public:
  SchemaFetchObserver(BosaSchemaService* service, std::shared_ptr<SchemaStore> store,
                      std::shared_ptr<Clock> clock, std::string upstream)
      : service_(service), store_(std::move(store)), clock_(std::move(clock)), upstream_(std::move(upstream)) {}

  void onHeaders(int status, std::string_view, Headers) override { status_ = status; }
  bool onBody(std::string_view chunk) override {
    body_.append(chunk.data(), chunk.size());
    return true;
  }
  void onComplete(const UpstreamOutcome& outcome) override {
    const std::string who = "BOSA schemas of upstream '" + upstream_ + "'";
    if (outcome.failure != UpstreamFailure::kNone) {
      service_->finishFetch(upstream_, Error::make(ErrorCode::kUpstreamUnreachable,
                                                   who + " could not be fetched (" + outcome.message + ")"));
      return;
    }
    if (status_ != 200) {
      service_->finishFetch(upstream_, Error::make(ErrorCode::kUpstreamUnreachable,
                                                   who + " could not be fetched: GET /connectors answered " +
                                                       std::to_string(status_)));
      return;
    }
    // Parsing and compiling happen here, on the upstream client's thread: this runs once per
    // schema TTL, and keeping it off the reactor threads keeps request latency flat.
    auto snap = makeBosaSnapshot(std::move(body_), unixMsNow(*clock_));
    if (!snap.ok()) {
      service_->finishFetch(upstream_, Error::make(ErrorCode::kUpstreamUnreachable,
                                                   who + " were not usable: " + snap.error().message));
      return;
    }
    // A durable write, on this thread too: rare, and the document must survive a crash so that
    // validation keeps working while the upstream is down.
    if (auto st = store_->save(upstream_, StoredSchemas{(*snap)->document, (*snap)->fetched_unix_ms}); !st.ok()) {
      service_->warn_(who + " were fetched but could not be stored: " + st.error().message);
    }
    service_->finishFetch(upstream_, std::move(snap));
  }

 private:
  BosaSchemaService* service_;
  std::shared_ptr<SchemaStore> store_;
  std::shared_ptr<Clock> clock_;
  std::string upstream_;
  int status_ = 0;
  std::string body_;
};

BosaSchemaService::BosaSchemaService(std::shared_ptr<SchemaStore> store, std::shared_ptr<UpstreamClient> upstream,
                                     std::shared_ptr<Clock> clock, std::shared_ptr<Metrics> metrics, BosaWarn warn)
    : store_(std::move(store)), upstream_(std::move(upstream)), clock_(std::move(clock)),
      metrics_(std::move(metrics)), warn_(std::move(warn)) {
  if (!warn_) warn_ = [](std::string_view) {};
}

BosaSchemaService::~BosaSchemaService() {
  // A fetch completing (or cancelled) while the client shuts down calls back into this object:
  // drop our reference first, while every member is still whole.
  upstream_.reset();
}

BosaSchemaService::State& BosaSchemaService::stateFor(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = states_[name];
  if (!slot) slot = std::make_unique<State>();
  return *slot;
}

std::shared_ptr<const BosaSnapshot> BosaSchemaService::peek(std::string_view upstream) const {
  State* state = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = states_.find(upstream);
    if (it == states_.end()) return nullptr;
    state = it->second.get();
  }
  std::lock_guard<std::mutex> lock(state->mu);
  return state->snapshot;
}

void BosaSchemaService::get(const UpstreamConfig& upstream, const std::vector<std::string>& want, Callback done) {
  State& s = stateFor(upstream.name);
  std::unique_lock<std::mutex> lock(s.mu);
  const auto now = clock_->monotonicNow();
  // Pick up documents saved by another process (keywayctl schemas refresh) or a previous run. The
  // generation is one read transaction; checking it at most once a second keeps it off the hot path.
  if (!s.loaded || now - s.last_generation_check >= std::chrono::seconds(1)) {
    s.last_generation_check = now;
    const uint64_t generation = store_->generation();
    if (!s.loaded || generation != s.store_generation) {
      s.loaded = true;
      s.store_generation = generation;
      auto stored = store_->load(upstream.name);
      if (!stored.ok()) {
        warn_("the BOSA schema store could not be read: " + stored.error().message);
      } else if (stored->has_value() &&
                 (!s.snapshot || (*stored)->fetched_unix_ms != s.snapshot->fetched_unix_ms)) {
        auto snap = makeBosaSnapshot(std::move((*stored)->document), (*stored)->fetched_unix_ms);
        if (snap.ok()) {
          s.snapshot = std::move(snap).value();
        } else {
          warn_("the stored BOSA schemas of upstream '" + upstream.name +
                "' are not usable: " + snap.error().message);
        }
      }
    }
  }

  std::optional<UpstreamRequest> fetch;
  auto prepareFetch = [&] {
    if (s.fetching) return;
    s.fetching = true;
    s.attempted = true;
    s.last_attempt = now;
    UpstreamRequest r;
    r.method = "GET";
    r.url = upstream.base_url + std::string(kConnectors);
    // Discovery is public: the SDK sends no credentials, and neither does keyway.
    r.headers.push_back({"Accept", "application/json"});
    r.connect_timeout = upstream.connect_timeout;
    r.total_timeout = std::min(upstream.timeout, kFetchTimeout);
    // Never fetch a document the schema store would refuse (storage::kMaxSchemaDocumentBytes).
    r.max_response_bytes = std::min<size_t>(upstream.max_response_bytes, size_t{64} << 20);
    r.pool = upstream.name;
    r.max_connections = upstream.max_connections;
    r.tls = upstream.tls;
    fetch = std::move(r);
  };
  auto launch = [&] {
    lock.unlock();
    if (fetch) {
      upstream_->start(std::move(*fetch),
                       std::make_shared<SchemaFetchObserver>(this, store_, clock_, upstream.name));
    }
  };

  std::shared_ptr<const BosaSnapshot> snap = s.snapshot;
  if (!snap) {
    if (!s.fetching && s.attempted && s.last_failed && now - s.last_attempt < kFailedFetchBackoff) {
      lock.unlock();
      done(Error::make(ErrorCode::kUnavailable, "the BOSA schemas of upstream '" + upstream.name +
                                                    "' are not stored yet and the upstream could not be "
                                                    "reached; retry when it is up"));
      return;
    }
    s.waiters.push_back(std::move(done));
    prepareFetch();
    launch();
    return;
  }
  bool missing = false;
  for (const auto& name : want) {
    if (snap->catalog->connector(name) == nullptr) missing = true;
  }
  const int64_t age_ms = unixMsNow(*clock_) - snap->fetched_unix_ms;
  if (missing && (!s.attempted || now - s.last_attempt >= kMissingRefreshInterval)) {
    s.waiters.push_back(std::move(done));
    prepareFetch();
    launch();
    return;
  }
  if (missing && s.fetching) {  // a refresh is running anyway: its result may have the connector
    s.waiters.push_back(std::move(done));
    launch();
    return;
  }
  if (age_ms > upstream.bosa.schema_ttl.count()) prepareFetch();  // stale: refresh in the background
  launch();
  done(std::move(snap));
}

void BosaSchemaService::finishFetch(const std::string& upstream_name,
                                    Result<std::shared_ptr<const BosaSnapshot>> result) {
  State& s = stateFor(upstream_name);
  std::vector<Callback> waiters;
  std::shared_ptr<const BosaSnapshot> snap;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.fetching = false;
    s.last_failed = !result.ok();
    if (result.ok()) {
      s.snapshot = result.value();
      metrics_->schema_refreshes.fetch_add(1, std::memory_order_relaxed);
    } else {
      metrics_->schema_refresh_failures.fetch_add(1, std::memory_order_relaxed);
    }
    snap = s.snapshot;
    waiters.swap(s.waiters);
  }
  if (!result.ok()) {
    warn_(result.error().message + (snap ? "; serving the stored schemas" : "; nothing is stored yet"));
  } else if (const size_t issues = snap->catalog->issueCount(); issues > 0) {
    warn_("the BOSA schemas of upstream '" + upstream_name + "' hold " + std::to_string(issues) +
          " construct(s) keyway cannot enforce; see `keywayctl schemas list`");
  }
  for (auto& w : waiters) {
    if (snap) {
      w(snap);
    } else {
      w(Error::make(ErrorCode::kUnavailable, "the BOSA schemas of upstream '" + upstream_name +
                                                 "' are not stored yet and could not be fetched (" +
                                                 result.error().message + "); retry when it is up"));
    }
  }
}

}  // namespace keyway::core
