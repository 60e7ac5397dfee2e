// The shared cache on Redis (docs/cache.md, "Shared cache"): core::SharedCache over RedisClient,
// with names and values from storage::SharedCacheCodec, and the other hosts' invalidations and
// purges applied to this host's own cache as they are announced.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "core/cache_store.hpp"
#include "core/config.hpp"
#include "core/retry.hpp"
#include "core/shared_cache.hpp"
#include "daemon/redis_client.hpp"
#include "storage/shared_cache_codec.hpp"

namespace keyway::daemon {

struct SharedCacheCounters {
  std::atomic<uint64_t> hits{0};
  std::atomic<uint64_t> misses{0};
  std::atomic<uint64_t> errors{0};    // error replies, lost connections, refused while skipped, garbage
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> lock_waits{0};
  std::atomic<uint64_t> rejected{0};  // values or messages that did not open
  std::atomic<uint64_t> invalidations_received{0};
};

struct AwaitState;  // a wait for another host's fill (redis_shared_cache.cpp)

// The Redis client options of `config` (the password read from its file now).
core::Result<RedisClientOptions> redisOptionsOf(const core::SharedCacheConfig& config);

class RedisSharedCache final : public core::SharedCache, public std::enable_shared_from_this<RedisSharedCache> {
 public:
  using Warn = std::function<void(std::string_view key, std::string message)>;
  // `local` gets the other hosts' invalidations and purges; `scheduler` paces the waits for
  // another host's fill; `warn` is rate-limited by the caller per key.
  static core::Result<std::shared_ptr<RedisSharedCache>> start(const core::SharedCacheConfig& config,
                                                               storage::SharedCacheCodec codec,
                                                               std::shared_ptr<core::CacheStore> local,
                                                               std::shared_ptr<core::Scheduler> scheduler,
                                                               std::shared_ptr<core::Clock> clock, Warn warn);
  ~RedisSharedCache() override;

  void lookup(const std::string& key, const core::CacheEntryMeta& meta, std::chrono::milliseconds lock_for,
              std::function<void(core::SharedLookup)> done) override;
  void await(const std::string& key, const std::string& ticket, std::chrono::milliseconds limit,
             std::function<void(std::optional<core::CachedResponse>)> done) override;
  void store(const std::string& key, const std::string& ticket, const core::CachedResponse& entry) override;
  void release(const std::string& key, const std::string& ticket) override;
  void invalidate(std::string_view upstream, std::string_view identity_tag, std::vector<std::string> paths,
                  bool prefix) override;

  // Ends the Redis connections: waiting lookups complete as "unavailable" now, later calls at
  // once. keywayd's shutdown calls it while the gateway and the upstream client still run.
  void stop() { client_->stop(); }

  const SharedCacheCounters& counters() const { return counters_; }
  RedisClientStats clientStats() const { return client_->stats(); }
  const std::string& address() const { return address_; }

 private:
  RedisSharedCache(std::unique_ptr<RedisClient> client, storage::SharedCacheCodec codec,
                   std::shared_ptr<core::CacheStore> local, std::shared_ptr<core::Scheduler> scheduler,
                   std::shared_ptr<core::Clock> clock, Warn warn, std::string address);
  // Counts a failed command and says why in a rate-limited warning.
  void failed(const RedisResult& r, const char* during);
  void poll(std::shared_ptr<AwaitState> state);
  void schedulePoll(std::shared_ptr<AwaitState> state);
  void onMessage(std::string_view sealed);

  std::unique_ptr<RedisClient> client_;
  storage::SharedCacheCodec codec_;
  std::shared_ptr<core::CacheStore> local_;
  std::shared_ptr<core::Scheduler> scheduler_;
  std::shared_ptr<core::Clock> clock_;
  Warn warn_;
  std::string address_;
  std::string origin_;  // this process, in its messages
  SharedCacheCounters counters_;
};

// {"address", "up", "hits", "misses", "errors", "timeouts", "last_error"} for /_keyway/status.
std::string sharedCacheStatusJson(const RedisSharedCache& shared);

// `keywayctl cache purge` on a fleet: bumps the epoch of `upstream` ("" = every upstream) so that
// no host can name the old entries, and tells every host to drop its own. Blocking (keywayctl).
core::Status purgeSharedCache(const core::SharedCacheConfig& config, const storage::SharedCacheCodec& codec,
                              std::string_view upstream, std::string_view path_prefix);

}  // namespace keyway::daemon
