// BOSA user tokens: kept, reused until near expiry, minted once per user and key.
#include "core/bosa_tokens.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <ctime>

#include "core/json_schema.hpp"
#include "core/text.hpp"

namespace keyway::core {

namespace {

// A token without a usable expires_at is kept this long: short enough that a revoked one is not
// used for long, long enough that it is not minted per request.
constexpr int64_t kDefaultLifetimeSeconds = 300;

int toInt(std::string_view s) {
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

// Wipes a std::string that held secret bytes (the upstream request body carries the user secret).
void wipe(std::string& s) {
  secureWipe(s.data(), s.capacity());
  s.clear();
}

}  // namespace

std::optional<int64_t> parseBosaTimestamp(std::string_view t) {
  // YYYY-MM-DDTHH:MM:SS
  if (t.size() < 19 || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != ' ') || t[13] != ':' ||
      t[16] != ':') {
    return std::nullopt;
  }
  if (!isDigits(t.substr(0, 4)) || !isDigits(t.substr(5, 2)) || !isDigits(t.substr(8, 2)) ||
      !isDigits(t.substr(11, 2)) || !isDigits(t.substr(14, 2)) || !isDigits(t.substr(17, 2))) {
    return std::nullopt;
  }
  std::string_view rest = t.substr(19);
  if (!rest.empty() && rest.front() == '.') {
    size_t n = 1;
    while (n < rest.size() && rest[n] >= '0' && rest[n] <= '9') ++n;
    if (n == 1) return std::nullopt;
    rest.remove_prefix(n);
  }
  int64_t offset = 0;
  if (rest == "Z" || rest == "z" || rest.empty()) {
    // naive timestamps are UTC (BOSA's server runs in UTC)
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
             isDigits(rest.substr(1, 2)) && isDigits(rest.substr(4, 2))) {
    offset = (toInt(rest.substr(1, 2)) * 3600 + toInt(rest.substr(4, 2)) * 60) * (rest[0] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = toInt(t.substr(0, 4)) - 1900;
  tm.tm_mon = toInt(t.substr(5, 2)) - 1;
  tm.tm_mday = toInt(t.substr(8, 2));
  tm.tm_hour = toInt(t.substr(11, 2));
  tm.tm_min = toInt(t.substr(14, 2));
  tm.tm_sec = toInt(t.substr(17, 2));
  if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
      tm.tm_sec > 60) {
    return std::nullopt;
  }
  return static_cast<int64_t>(timegm(&tm)) - offset;
}

class TokenMintObserver final : public UpstreamObserver {
 public:
  TokenMintObserver(BosaTokenService* service, std::string key, std::string identifier, std::string upstream,
                    bool persist, int64_t now_unix)
      : service_(service), key_(std::move(key)), identifier_(std::move(identifier)),
        upstream_(std::move(upstream)), persist_(persist), now_unix_(now_unix) {}
  ~TokenMintObserver() override { wipe(body_); }

  void onHeaders(int status, std::string_view, Headers) override { status_ = status; }
  bool onBody(std::string_view chunk) override {
    if (body_.size() + chunk.size() <= (1u << 20)) body_.append(chunk.data(), chunk.size());
    return true;
  }
  void onComplete(const UpstreamOutcome& outcome) override {
    const std::string who = "minting a token for BOSA user '" + identifier_ + "' at upstream '" + upstream_ + "'";
    if (outcome.failure != UpstreamFailure::kNone) {
      const bool timeout = outcome.failure == UpstreamFailure::kTimeout;
      service_->finishMint(key_, identifier_, upstream_, persist_,
                           Error::make(timeout ? ErrorCode::kUpstreamTimeout : ErrorCode::kUpstreamUnreachable,
                                       who + " failed (" + outcome.message + "); retry later"));
      return;
    }
    if (status_ == 400 || status_ == 401 || status_ == 403 || status_ == 404 || status_ == 422) {
      service_->finishMint(key_, identifier_, upstream_, persist_,
                           Error::make(ErrorCode::kForbidden,
                                       "BOSA refused the stored secret of user '" + identifier_ + "' (status " +
                                           std::to_string(status_) +
                                           "); an operator must store the user's current secret "
                                           "(keywayctl bosa-user set-secret)"));
      return;
    }
    if (status_ != 200 && status_ != 201) {
      service_->finishMint(key_, identifier_, upstream_, persist_,
                           Error::make(ErrorCode::kUpstreamUnreachable,
                                       who + " failed: POST /auth/tokens answered " + std::to_string(status_) +
                                           "; retry later"));
      return;
    }
    rapidjson::Document doc;
    const rapidjson::Value* token = nullptr;
    const rapidjson::Value* expires = nullptr;
    if (parseJsonText(body_, &doc).ok() && doc.IsObject()) {
      const rapidjson::Value* data = &doc;
      auto d = doc.FindMember("data");
      if (d != doc.MemberEnd() && d->value.IsObject()) data = &d->value;
      auto t = data->FindMember("token");
      if (t != data->MemberEnd() && t->value.IsString() && t->value.GetStringLength() > 0) token = &t->value;
      auto e = data->FindMember("expires_at");
      if (e != data->MemberEnd() && e->value.IsString()) expires = &e->value;
    }
    if (token == nullptr) {
      service_->finishMint(key_, identifier_, upstream_, persist_,
                           Error::make(ErrorCode::kUpstreamUnreachable,
                                       who + " failed: the answer holds no data.token"));
      return;
    }
    BosaTokenService::Kept kept;
    kept.token = SecretString(std::string_view(token->GetString(), token->GetStringLength()));
    std::optional<int64_t> exp;
    if (expires != nullptr) exp = parseBosaTimestamp({expires->GetString(), expires->GetStringLength()});
    kept.expires_unix = exp ? *exp : now_unix_ + kDefaultLifetimeSeconds;
    // The parsed document holds the token too.
    if (token != nullptr) {
      secureWipe(const_cast<char*>(token->GetString()), token->GetStringLength());
    }
    service_->finishMint(key_, identifier_, upstream_, persist_, std::move(kept));
  }

 private:
  BosaTokenService* service_;
  std::string key_, identifier_, upstream_;
  bool persist_;
  int64_t now_unix_;
  int status_ = 0;
  std::string body_;
};

BosaTokenService::BosaTokenService(std::shared_ptr<CredentialStore> store, std::shared_ptr<UpstreamClient> upstream,
                                   std::shared_ptr<Clock> clock, std::shared_ptr<Metrics> metrics,
                                   std::shared_ptr<EventSink> events)
    : store_(std::move(store)),
      upstream_(std::move(upstream)),
      clock_(std::move(clock)),
      metrics_(std::move(metrics)),
      events_(std::move(events)) {}

BosaTokenService::~BosaTokenService() {
  upstream_.reset();  // see ~BosaSchemaService: in-flight mints call back into this object
}

void BosaTokenService::acquire(const UpstreamConfig& upstream, const std::string& identifier,
                               const ResolvedSecret& api_key, std::string_view rejected, Callback done) {
  const int64_t now = clock_->unixSeconds();
  const int64_t margin = std::chrono::duration_cast<std::chrono::seconds>(upstream.bosa.user_token_margin).count();
  std::string key = upstream.name;
  key.append(1, '\0').append(identifier).append(1, '\0').append(api_key.name).append(1, '\0').append(api_key.scope);
  // Only tokens minted under the shared key are persisted: the store keeps one token per user,
  // and a team with its own BOSA key needs its own tokens (kept in memory).
  const bool persist = api_key.scope == "shared";
  auto usable = [&](const Kept& k) {
    return k.expires_unix - margin > now && (rejected.empty() || !constantTimeEquals(k.token.view(), rejected));
  };
  std::unique_lock<std::mutex> lock(mu_);
  if (auto it = kept_.find(key); it != kept_.end() && usable(it->second)) {
    if (mintedWithCurrentSecret(it->second, identifier)) {
      AcquiredToken token{it->second.token.clone(), false};
      lock.unlock();
      done(std::move(token));
      return;
    }
    kept_.erase(it);
  }
  if (auto it = mints_.find(key); it != mints_.end()) {
    it->second.waiters.push_back(std::move(done));
    return;
  }
  if (persist) {
    // After a restart the stored token is still good until it nears expiry (a new secret drops
    // it from the store).
    const uint64_t generation = store_->generation();
    auto stored = store_->findUserToken(identifier);
    auto current = store_->bosaUserSecret(identifier);
    if (stored.ok() && stored->has_value() && current.ok() && current->has_value()) {
      Kept k{std::move((*stored)->token), (*stored)->expires_unix, store_->fingerprint((*current)->view()),
             generation};
      if (usable(k)) {
        AcquiredToken token{k.token.clone(), false};
        kept_[key] = std::move(k);
        lock.unlock();
        done(std::move(token));
        return;
      }
    }
  }
  auto secret = store_->bosaUserSecret(identifier);
  if (!secret.ok()) {
    lock.unlock();
    done(Error::make(ErrorCode::kUnavailable, "the credential store could not be read; see keyway's log and retry"));
    return;
  }
  if (!secret->has_value()) {
    lock.unlock();
    done(Error::make(ErrorCode::kForbidden, "BOSA user '" + identifier + "' is unknown or not granted to this team"));
    return;
  }
  Mint& mint = mints_[key];
  mint.waiters.push_back(std::move(done));
  mint.secret_fingerprint = store_->fingerprint((*secret)->view());
  lock.unlock();

  UpstreamRequest r;
  r.method = "POST";
  r.url = upstream.base_url + "/auth/tokens";
  r.headers.push_back({"Content-Type", "application/json"});
  r.headers.push_back({"Accept", "application/json"});
  std::string header_value = upstream.credential.prefix + std::string(api_key.value.view());
  r.headers.push_back({upstream.credential.header.empty() ? std::string("X-API-Key") : upstream.credential.header,
                       std::move(header_value)});
  rapidjson::StringBuffer buffer;
  {
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    w.StartObject();
    w.Key("identifier");
    w.String(identifier.data(), static_cast<rapidjson::SizeType>(identifier.size()));
    w.Key("secret");
    w.String((*secret)->data(), static_cast<rapidjson::SizeType>((*secret)->size()));
    w.EndObject();
  }
  r.body.assign(buffer.GetString(), buffer.GetSize());
  secureWipe(const_cast<char*>(buffer.GetString()), buffer.GetSize());
  r.connect_timeout = upstream.connect_timeout;
  r.total_timeout = std::min(upstream.timeout, std::chrono::milliseconds(10000));
  r.max_response_bytes = 1u << 20;
  r.pool = upstream.name;
  r.max_connections = upstream.max_connections;
  r.tls = upstream.tls;
  metrics_->token_mints.fetch_add(1, std::memory_order_relaxed);
  upstream_->start(std::move(r),
                   std::make_shared<TokenMintObserver>(this, std::move(key), identifier, upstream.name, persist, now));
}

void BosaTokenService::finishMint(const std::string& key, const std::string& identifier, const std::string& upstream,
                                  bool persist, Result<Kept> result) {
  if (result.ok() && persist) {
    // Durable and encrypted (docs/auth.md: minted tokens at rest are encrypted). Rare: once per token
    // lifetime per user. Failing only costs a mint after a restart: the token is kept in memory.
    if (auto st = store_->storeUserToken(identifier, UserToken{result->token.clone(), result->expires_unix});
        !st.ok()) {
      metrics_->degraded_events.fetch_add(1, std::memory_order_relaxed);
      events_->warn("a minted BOSA user token could not be saved; it is kept in memory only",
                    {{"upstream", upstream}, {"user", identifier}, {"cause", st.error().message}});
    }
  }
  if (!result.ok()) {
    // The client only learns its own request failed; the operator learns which user and why.
    metrics_->token_mint_failures.fetch_add(1, std::memory_order_relaxed);
    events_->warn("BOSA user token mint failed",
                  {{"upstream", upstream}, {"user", identifier}, {"cause", result.error().message}});
  }
  std::vector<Callback> waiters;
  std::optional<Kept> kept;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::string fingerprint;
    auto it = mints_.find(key);
    if (it != mints_.end()) {
      waiters = std::move(it->second.waiters);
      fingerprint = std::move(it->second.secret_fingerprint);
      mints_.erase(it);
    }
    if (result.ok()) {
      // Checked against the store at its next use (generation 0 is never current).
      kept_[key] = Kept{result->token.clone(), result->expires_unix, std::move(fingerprint), 0};
    }
  }
  for (auto& w : waiters) {
    if (result.ok()) {
      w(AcquiredToken{result->token.clone(), true});
    } else {
      w(result.error());
    }
  }
}

bool BosaTokenService::mintedWithCurrentSecret(Kept& kept, const std::string& identifier) {
  const uint64_t generation = store_->generation();
  if (generation == kept.checked_generation) return true;
  auto secret = store_->bosaUserSecret(identifier);
  // A store that cannot be read now is not a reason to drop a working token; check again later.
  if (!secret.ok()) return true;
  if (!secret->has_value() || !constantTimeEquals(store_->fingerprint((*secret)->view()), kept.secret_fingerprint)) {
    return false;
  }
  kept.checked_generation = generation;
  return true;
}

}  // namespace keyway::core
