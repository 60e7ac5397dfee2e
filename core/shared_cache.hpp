// The shared cache role (docs/cache.md, "Shared cache"): a second level behind each host's own
// cache that every host of a fleet reads, with a fill lock so that one host of the fleet fetches
// a key, and invalidation that reaches every host. Implemented in daemon/ on Redis.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/cache_store.hpp"

namespace keyway::core {

struct SharedLookup {
  enum class Outcome {
    kUnavailable,  // no answer (down, slow, garbage): behave as without a shared cache
    kFresh,        // `entry` is fresh
    kFill,         // this host holds the key's fill lock and fetches; `entry` may hold a stale copy
    kWait,         // another host holds the lock; `entry` may hold a stale copy
  };
  Outcome outcome = Outcome::kUnavailable;
  std::optional<CachedResponse> entry;
  // Where a fill stores and which lock it releases (opaque to the caller).
  std::string ticket;
};

// Thread-safe; never blocks. Each callback runs exactly once, never inline, on the
// implementation's own thread.
class SharedCache {
 public:
  virtual ~SharedCache() = default;

  // Looks `key` up; when there is no fresh entry, takes the key's fill lock for `lock_for` unless
  // another host holds it.
  virtual void lookup(const std::string& key, const CacheEntryMeta& meta, std::chrono::milliseconds lock_for,
                      std::function<void(SharedLookup)> done) = 0;

  // Waits, at most `limit`, for the fill of the host holding the lock: the entry it stored, or
  // nullopt when the lock went away without one (that host failed; the caller fetches).
  virtual void await(const std::string& key, const std::string& ticket, std::chrono::milliseconds limit,
                     std::function<void(std::optional<CachedResponse>)> done) = 0;

  // Stores a fill's entry where `ticket` says and releases its lock. Best effort.
  virtual void store(const std::string& key, const std::string& ticket, const CachedResponse& entry) = 0;
  // Releases the lock of a fill that stored nothing. Best effort.
  virtual void release(const std::string& key, const std::string& ticket) = 0;

  // A write made the entries of (upstream, identity_tag) under `paths` (prefixes when `prefix`)
  // stale: every entry of that identity becomes unreachable in the shared cache, and every other
  // host drops the same entries from its own cache. One call per write. Best effort.
  virtual void invalidate(std::string_view upstream, std::string_view identity_tag, std::vector<std::string> paths,
                          bool prefix) = 0;
};

}  // namespace keyway::core
