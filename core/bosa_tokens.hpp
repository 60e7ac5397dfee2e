// BOSA user tokens (docs/auth.md): minted through POST /auth/tokens with the user's stored secret, kept
// (encrypted in the credential store, and in memory) until shortly before they expire, minted once
// for all concurrent requests of a user, and re-minted when the upstream rejects one.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/config.hpp"
#include "core/credential_store.hpp"
#include "core/metrics.hpp"
#include "core/request_context.hpp"
#include "core/result.hpp"
#include "core/secret.hpp"
#include "core/upstream_client.hpp"

namespace keyway::core {

// A user token as acquire() hands it out, and how it was had (for the access line).
struct AcquiredToken {
  SecretString token;
  bool minted = false;  // minted for this call, or by a concurrent one it waited for; false: kept
};

class BosaTokenService {
 public:
  // `events` gets a warn line for every failed mint and failed save of a minted token (user,
  // upstream and cause; never a secret or token).
  BosaTokenService(std::shared_ptr<CredentialStore> store, std::shared_ptr<UpstreamClient> upstream,
                   std::shared_ptr<Clock> clock, std::shared_ptr<Metrics> metrics, std::shared_ptr<EventSink> events);
  ~BosaTokenService();

  using Callback = std::function<void(Result<AcquiredToken>)>;

  // Calls `done` exactly once with a token for `identifier` usable with `api_key` (a token is tied
  // to the client key it was minted under): inline when a kept token is valid for longer than the
  // upstream's user_token_margin, else after a mint shared by every concurrent caller for the
  // same user and key (then on the upstream client's thread). `rejected` is a token the upstream
  // just answered 401 to: it is never handed out again. Errors: kForbidden when BOSA refuses the
  // stored secret (or the user has none), kUpstreamUnreachable / kUpstreamTimeout when the mint
  // could not be made, kUnavailable when the store cannot be read. Never logs or returns a secret.
  void acquire(const UpstreamConfig& upstream, const std::string& identifier, const ResolvedSecret& api_key,
               std::string_view rejected, Callback done);

 private:
  struct Kept {
    SecretString token;
    int64_t expires_unix = 0;
    // The fingerprint of the user secret it was minted with, and the store generation at which
    // that was last found to be the user's secret.
    std::string secret_fingerprint;
    uint64_t checked_generation = 0;
  };
  struct Mint {
    std::vector<Callback> waiters;
    std::string secret_fingerprint;  // of the secret the mint sends
  };
  friend class TokenMintObserver;
  void finishMint(const std::string& key, const std::string& identifier, const std::string& upstream, bool persist,
                  Result<Kept> result);
  // Whether `kept` was minted with the user's current secret. A kept token outlives neither the
  // user nor a `bosa-user set-secret`: after any store write the secret is read once more and
  // compared. Called with mu_ held.
  bool mintedWithCurrentSecret(Kept& kept, const std::string& identifier);

  std::shared_ptr<CredentialStore> store_;
  std::shared_ptr<UpstreamClient> upstream_;
  std::shared_ptr<Clock> clock_;
  std::shared_ptr<Metrics> metrics_;
  std::shared_ptr<EventSink> events_;
  std::mutex mu_;
  std::map<std::string, Kept> kept_;    // by upstream, identifier and key scope
  std::map<std::string, Mint> mints_;   // mints in flight, same keys
};

// Parses BOSA's naive ISO timestamp ("2025-07-31T20:20:01.970582", optionally with "Z" or
// "+00:00") as UTC Unix seconds. Empty on malformed input.
std::optional<int64_t> parseBosaTimestamp(std::string_view text);

}  // namespace keyway::core
