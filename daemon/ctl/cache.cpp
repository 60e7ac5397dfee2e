// keywayctl cache stats|purge: the response cache a running keywayd uses (docs/cache.md).
#include "daemon/ctl/groups.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string_view>

#include "core/cache_store.hpp"
#include "daemon/redis_shared_cache.hpp"
#include "storage/lmdb_cache_store.hpp"
#include "storage/master_key.hpp"
#include "storage/shared_cache_codec.hpp"

namespace keyway::daemon::ctl {
namespace {

std::string cacheDir(const core::Config& config) {
  return config.cache.dir.empty() ? config.state_dir + "/cache" : config.cache.dir;
}

// Warnings of the cache store arrive on its writer thread: they are collected here and printed by
// the command's thread, so stderr lines never interleave.
class WarningSink {
 public:
  void add(std::string_view message) {
    std::lock_guard<std::mutex> lock(mutex_);
    lines_.emplace_back(message);
  }
  void drainTo(std::ostream& err) {
    std::vector<std::string> lines;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      lines.swap(lines_);
    }
    for (const auto& line : lines) err << "keywayctl: warning: " << line << "\n";
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

// Opens the cache environment exactly as keywayd does (same directory and bound, so both agree on
// the map size). Null store when there is no cache directory yet (keywayctl must not create one
// the daemon has not made, and there is nothing to report or purge: rc 0, `missing` set, a note
// printed unless `quiet`) or when it is unusable (rc 2, error printed). close() applies what is
// queued, stops the writer and prints warnings.
struct OpenedCache {
  std::unique_ptr<storage::LmdbCacheStore> store;
  std::shared_ptr<WarningSink> warnings = std::make_shared<WarningSink>();
  int rc = kCtlExitOk;  // meaningful when store is null
  bool missing = false;

  void close(std::ostream& err) {
    store.reset();
    warnings->drainTo(err);
  }
};

OpenedCache openCache(Context& c, bool quiet = false) {
  OpenedCache opened;
  const std::string dir = cacheDir(*c.config);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    opened.missing = true;
    if (!quiet) {
      c.out << "no response cache yet at " << dir << " (keywayd creates it when it starts; "
            << c.whereHint() << ")\n";
    }
    return opened;
  }
  if (::access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    // Checked here because the store treats an environment it cannot open as corrupt and moves
    // it aside: a keywayctl run as the wrong user must not take the daemon's cache away.
    opened.rc = c.fail("no permission to use the response cache at " + dir +
                           "; run keywayctl as the user keywayd runs as",
                       kCtlExitFailure);
    return opened;
  }
  storage::LmdbCacheStoreOptions options;
  options.dir = dir;
  options.max_bytes = c.config->cache.max_bytes;
  options.warn = [sink = opened.warnings](std::string_view message) { sink->add(message); };
  opened.store = storage::LmdbCacheStore::open(std::move(options));
  if (!opened.store || !opened.store->healthy()) {
    opened.close(c.err);
    opened.rc = c.fail("cannot use the response cache at " + dir +
                           " (see the warnings above); nothing was done",
                       kCtlExitFailure);
  }
  return opened;
}

// `cache stats --json`: one object (docs/cli.md); `exists` false and zero counts before keywayd
// made the cache.
std::string statsJson(const Context& c, const core::CacheStats* st) {
  const core::CacheStats none{};
  const core::CacheStats& s = st != nullptr ? *st : none;
  const uint64_t lookups = s.hits + s.misses;
  std::string ratio = "null";
  if (lookups != 0) {
    std::ostringstream r;
    r.precision(4);
    r << std::fixed << static_cast<double>(s.hits) / static_cast<double>(lookups);
    ratio = r.str();
  }
  return JsonObject()
      .str("directory", cacheDir(*c.config))
      .boolean("enabled", c.config->cache.enabled)
      .boolean("exists", st != nullptr)
      .num("entries", s.entries)
      .num("bytes", s.bytes)
      .num("max_bytes", st != nullptr ? s.max_bytes : uint64_t{c.config->cache.max_bytes})
      .num("hits", s.hits)
      .num("misses", s.misses)
      .raw("hit_ratio", ratio)
      .time("oldest_entry", s.entries == 0 ? 0 : s.oldest_stored_unix_ms / 1000)
      .num("evictions", s.evictions)
      .num("expired", s.expired)
      .num("dropped_writes", s.dropped_writes)
      .num("degraded_events", s.degraded_events)
      .boolean("healthy", st == nullptr || s.healthy)
      .text();
}

int cmdCacheStats(Context& c) {
  const bool json = c.flag("--json");
  if (!c.config->cache.enabled && !json) {
    c.out << "note: the cache is disabled in the configuration (cache.enabled: false)\n";
  }
  auto opened = openCache(c, json);
  if (!opened.store) {
    if (json && opened.missing) c.out << statsJson(c, nullptr) << "\n";
    return opened.rc;
  }
  const core::CacheStats st = opened.store->stats();
  opened.close(c.err);
  if (json) {
    c.out << statsJson(c, &st) << "\n";
    return st.healthy ? kCtlExitOk : kCtlExitFailure;
  }
  const uint64_t lookups = st.hits + st.misses;
  std::ostringstream ratio;
  if (lookups == 0) {
    ratio << "- (no lookups yet)";
  } else {
    ratio.precision(1);
    ratio << std::fixed << 100.0 * static_cast<double>(st.hits) / static_cast<double>(lookups)
          << "% (" << st.hits << " hits, " << st.misses << " misses)";
  }
  std::vector<std::vector<std::string>> rows = {
      {"directory:", cacheDir(*c.config)},
      {"entries:", std::to_string(st.entries)},
      {"bytes:", formatBytes(st.bytes) + " of max " + formatBytes(st.max_bytes)},
      {"hit ratio:", ratio.str()},
      {"oldest entry:", st.entries == 0 ? std::string("-")
                                        : formatTime(st.oldest_stored_unix_ms / 1000)},
      {"evictions:", std::to_string(st.evictions)},
      {"expired:", std::to_string(st.expired)},
      {"dropped writes:", std::to_string(st.dropped_writes)},
      {"degraded events:", std::to_string(st.degraded_events)},
      {"healthy:", st.healthy ? "yes" : "no"},
  };
  printTable(c.out, rows);
  return st.healthy ? kCtlExitOk : kCtlExitFailure;
}

// Purging everything by accident would cost every app a cold cache: ask for it explicitly.
std::optional<std::string> checkPurgeScope(const Args& args) {
  const bool all = args.flags.count("--all") != 0;
  if (!all && args.options.empty()) {
    return std::string("say what to purge: --upstream U and/or --prefix PATH, or --all for "
                       "everything");
  }
  if (all && !args.options.empty()) {
    return std::string("--all purges everything; do not combine it with --upstream or --prefix");
  }
  return std::nullopt;
}

int cmdCachePurge(Context& c) {
  const bool all = c.flag("--all");
  const auto upstream = c.option("--upstream");
  const auto prefix = c.option("--prefix");
  if (upstream) {
    if (auto rc = checkUpstream(c, *upstream)) return *rc;
  }
  if (prefix && (*prefix)[0] != '/') {
    return c.fail("--prefix must be a path starting with '/', e.g. /v1/webhooks", kCtlExitUsage);
  }
  if (prefix && prefix->find('?') != std::string::npos) {
    return c.fail("--prefix is a path without a query (entries of every query are purged)",
                  kCtlExitUsage);
  }
  const bool json = c.flag("--json");
  std::string scope = all ? std::string("all upstreams, all paths")
                          : (upstream ? "upstream " + *upstream : std::string("all upstreams")) +
                                (prefix ? ", paths under " + *prefix : std::string(", all paths"));
  auto opened = openCache(c, json);
  size_t dropped = 0;
  if (!opened.store && opened.rc != kCtlExitOk) return opened.rc;
  if (opened.store) {
    // purge() is synchronous and bumps the store generation: a running keywayd stops serving the
    // purged entries (and its not yet written puts) at once.
    dropped = all ? opened.store->purge("", "") : opened.store->purge(upstream.value_or(""), prefix.value_or(""));
    opened.close(c.err);
  }
  if (!json) c.out << "purged " << dropped << (dropped == 1 ? " entry" : " entries") << " (" << scope << ")\n";
  // The fleet's shared cache: a purge there has no paths to go by (names are keyed hashes), so
  // it drops every entry of the upstream (or all), and each host drops the same as here.
  std::optional<core::Error> shared_failure;
  if (c.config->cache.shared) {
    const core::SharedCacheConfig& shared = *c.config->cache.shared;
    auto master = storage::loadMasterKeyFile(c.config->master_key_file);
    if (!master) {
      shared_failure = master.error();
    } else if (auto codec = storage::SharedCacheCodec::create(*master, shared.key_prefix); !codec) {
      shared_failure = codec.error();
    } else if (auto st = purgeSharedCache(shared, *codec, all ? "" : upstream.value_or(""),
                                          all ? "" : prefix.value_or(""));
               !st) {
      shared_failure = st.error();
    } else if (!json) {
      c.out << "purged the shared cache (Redis at " << shared.address << ": "
            << (all || !upstream ? std::string("every upstream") : "every entry of upstream " + *upstream)
            << "); every host drops the same entries as here\n";
    }
  }
  if (json) {
    c.out << JsonObject()
                 .num("purged", static_cast<uint64_t>(dropped))
                 .str("scope", scope)
                 .raw("shared", !c.config->cache.shared ? "false" : shared_failure ? "\"unavailable\"" : "true")
                 .text()
          << "\n";
  }
  if (shared_failure) {
    return c.fail("shared cache: " + shared_failure->message + " (this host's cache was purged)", kCtlExitFailure);
  }
  return kCtlExitOk;
}

}  // namespace

const CommandGroup& cacheGroup() {
  static const CommandGroup group = {
      "cache",
      "usage: keywayctl cache stats [--json]\n"
      "       keywayctl cache purge [--upstream U] [--prefix PATH] [--all] [--json]\n"
      "\n"
      "Works on the response cache environment of the configuration (cache.dir, default\n"
      "<state_dir>/cache), the same one a running keywayd uses.\n"
      "`cache stats` shows entries, bytes and the bound, the hit ratio, the oldest entry,\n"
      "evictions and whether the store is healthy.\n"
      "`cache purge` drops entries of every identity: --upstream U only those of upstream U,\n"
      "--prefix PATH only those whose path starts with PATH (e.g. /v1/webhooks), both together\n"
      "the intersection; --all everything. Without an option it refuses. A running keywayd\n"
      "stops serving the purged entries at once. With cache.shared, the shared cache is\n"
      "purged too (every entry of the upstream, or all) and every host of the fleet drops the\n"
      "same entries from its own cache; exit 2 when Redis cannot be reached.\n",
      {
          {"stats", 0, 0, {}, {"--json"}, {}, "keywayctl cache stats [--json]", Store::kNone,
           Input::kNone, cmdCacheStats},
          {"purge", 0, 0, {"--upstream", "--prefix"}, {"--all", "--json"}, {},
           "keywayctl cache purge [--upstream U] [--prefix PATH] [--all] [--json]", Store::kNone,
           Input::kNone, cmdCachePurge, checkPurgeScope},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
