// Tests for the CacheStore implementations: storage/memory_cache_store and
// storage/lmdb_cache_store (persistence, LRU, purge across instances and processes, full map,
// corruption).
#include <doctest/doctest.h>

#include <malloc.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/cache_policy.hpp"
#include "core/cache_store.hpp"
#include "core/clock.hpp"
#include "storage/lmdb_cache_store.hpp"
#include "storage/memory_cache_store.hpp"

using namespace keyway;
using core::CachedResponse;
using core::CacheEntryMeta;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "keyway-cache-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string cacheDir() const { return path_ + "/cache"; }

 private:
  std::string path_;
};

struct Warnings {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view m) {
      std::lock_guard<std::mutex> lock(mu);
      lines.emplace_back(m);
    };
  }
  bool contains(std::string_view needle) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& l : lines) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }
};

int64_t nowMs(const core::Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             clock.systemNow().time_since_epoch())
      .count();
}

CachedResponse response(const core::Clock& clock, std::string body, int64_t fresh_ms = 60'000,
                        int64_t stale_ms = 3'600'000) {
  CachedResponse r;
  r.status = 200;
  r.reason = "OK";
  r.headers = {{"Content-Type", "application/json"}, {"X-Request-Id", "r-1"}};
  r.body = std::move(body);
  r.stored_unix_ms = nowMs(clock);
  r.fresh_until_unix_ms = r.stored_unix_ms + fresh_ms;
  r.stale_until_unix_ms = r.fresh_until_unix_ms + stale_ms;
  return r;
}

std::string keyFor(std::string_view upstream, std::string_view path, std::string_view query,
                   std::string_view user = "alice") {
  core::CacheIdentity id;
  id.credential = "bundleup.api_key@shared";
  id.bosa_user = std::string(user);
  return core::cacheKey(upstream, "GET", path, query, "", id);
}

std::string tagFor(std::string_view user = "alice") {
  core::CacheIdentity id;
  id.credential = "bundleup.api_key@shared";
  id.bosa_user = std::string(user);
  return core::identityTag(id);
}

CacheEntryMeta metaFor(std::string_view upstream, std::string_view path,
                       std::string_view user = "alice") {
  return CacheEntryMeta{std::string(upstream), std::string(path), tagFor(user)};
}

// Puts an entry whose key is derived from (upstream, path, query, user).
void putEntry(core::CacheStore& store, const core::Clock& clock, std::string_view upstream,
              std::string_view path, std::string_view query, std::string body,
              std::string_view user = "alice") {
  store.put(keyFor(upstream, path, query, user), metaFor(upstream, path, user),
            response(clock, std::move(body)));
}

bool has(core::CacheStore& store, std::string_view upstream, std::string_view path,
         std::string_view query, std::string_view user = "alice") {
  return store.get(keyFor(upstream, path, query, user)).has_value();
}

storage::LmdbCacheStoreOptions lmdbOptions(const TempDir& dir,
                                           std::shared_ptr<core::ManualClock> clock,
                                           Warnings* warnings = nullptr) {
  storage::LmdbCacheStoreOptions o;
  o.dir = dir.cacheDir();
  o.max_bytes = size_t{16} << 20;
  o.map_size = size_t{64} << 20;
  o.clock = std::move(clock);
  static Warnings ignored;
  o.warn = (warnings != nullptr ? warnings : &ignored)->sink();
  return o;
}

// Runs `body` once against each implementation.
void forEachStore(const std::function<void(core::CacheStore&, core::ManualClock&)>& body,
                  size_t max_bytes = size_t{16} << 20) {
  SUBCASE("memory") {
    auto clock = std::make_shared<core::ManualClock>();
    storage::MemoryCacheStore store({max_bytes, clock});
    body(store, *clock);
  }
  SUBCASE("lmdb") {
    TempDir dir;
    auto clock = std::make_shared<core::ManualClock>();
    auto options = lmdbOptions(dir, clock);
    options.max_bytes = max_bytes;
    auto store = storage::LmdbCacheStore::open(options);
    REQUIRE(store->healthy());
    body(*store, *clock);
  }
}

}  // namespace

TEST_CASE("cache store: put then get returns the response with its metadata") {
  forEachStore([](core::CacheStore& store, core::ManualClock& clock) {
    const std::string k = keyFor("bundleup-api", "/v1/connections", "limit=10");
    CHECK_FALSE(store.get(k).has_value());
    CachedResponse r = response(clock, R"({"data":[1,2,3]})");
    r.status = 203;
    r.reason = "Non-Authoritative Information";
    r.headers.push_back({"X-Empty", ""});
    store.put(k, metaFor("bundleup-api", "/v1/connections"), r);
    // Visible at once, before and after the write reaches storage.
    for (int round = 0; round < 2; ++round) {
      CAPTURE(round);
      auto got = store.get(k);
      REQUIRE(got.has_value());
      CHECK(got->status == 203);
      CHECK(got->reason == "Non-Authoritative Information");
      REQUIRE(got->headers.size() == 3);
      CHECK(got->headers[0].name == "Content-Type");
      CHECK(got->headers[0].value == "application/json");
      CHECK(got->headers[2].name == "X-Empty");
      CHECK(got->headers[2].value == "");
      CHECK(got->body == R"({"data":[1,2,3]})");
      CHECK(got->stored_unix_ms == r.stored_unix_ms);
      CHECK(got->fresh_until_unix_ms == r.fresh_until_unix_ms);
      CHECK(got->stale_until_unix_ms == r.stale_until_unix_ms);
      store.flush();
    }
    // Another key (another identity) is a miss.
    CHECK_FALSE(store.get(keyFor("bundleup-api", "/v1/connections", "limit=10", "bob")));
    // Replacing the entry.
    store.put(k, metaFor("bundleup-api", "/v1/connections"), response(clock, "v2"));
    CHECK(store.get(k)->body == "v2");
    store.flush();
    CHECK(store.get(k)->body == "v2");
    const core::CacheStats s = store.stats();
    CHECK(s.entries == 1);
    CHECK(s.bytes > 2);
    CHECK(s.hits >= 4);
    CHECK(s.misses >= 2);
    CHECK(s.oldest_stored_unix_ms == r.stored_unix_ms);
    CHECK(s.healthy);
  });
}

TEST_CASE("cache store: binary bodies and large entries round-trip") {
  forEachStore([](core::CacheStore& store, core::ManualClock& clock) {
    std::string body;
    for (int i = 0; i < 300'000; ++i) body += static_cast<char>(i * 131 % 256);
    const std::string k = keyFor("bundleiq", "/v1/notes", "");
    store.put(k, metaFor("bundleiq", "/v1/notes"), response(clock, body));
    store.flush();
    auto got = store.get(k);
    REQUIRE(got.has_value());
    CHECK(got->body == body);
  });
}

TEST_CASE("cache store: entries past stale_until are not served and are swept") {
  forEachStore([](core::CacheStore& store, core::ManualClock& clock) {
    const std::string k = keyFor("bundleup-api", "/v1/webhooks", "");
    store.put(k, metaFor("bundleup-api", "/v1/webhooks"), response(clock, "x", 1'000, 2'000));
    store.flush();
    clock.advance(std::chrono::milliseconds(2'999));
    CHECK(store.get(k).has_value());  // stale but usable: the caller decides
    clock.advance(std::chrono::milliseconds(1));
    CHECK_FALSE(store.get(k).has_value());
    // An entry that is already expired is not stored at all.
    CachedResponse dead = response(clock, "y", -5'000, 1'000);
    store.put(keyFor("bundleup-api", "/dead", ""), metaFor("bundleup-api", "/dead"), dead);
    CHECK_FALSE(store.get(keyFor("bundleup-api", "/dead", "")).has_value());
    CHECK(store.stats().dropped_writes >= 1);
  });
}

TEST_CASE("lmdb cache store: the expiry sweep removes dead entries only") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto store = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
  putEntry(*store, *clock, "bosa", "/connectors/a/list_x", "1", "short");
  store->put(keyFor("bosa", "/connectors/a/list_y", ""), metaFor("bosa", "/connectors/a/list_y"),
             response(*clock, "long", 60'000, 7'200'000));
  store->flush();
  CHECK(store->stats().entries == 2);
  clock->advance(std::chrono::hours(2));
  CHECK(store->sweepExpired() == 1);
  const core::CacheStats s = store->stats();
  CHECK(s.entries == 1);
  CHECK(s.expired == 1);
  CHECK(has(*store, "bosa", "/connectors/a/list_y", ""));
}

TEST_CASE("cache store: least recently READ entries are evicted first under max_bytes") {
  // Bodies of 2000 bytes; 7000 bytes hold three entries (with per-entry overhead) but not four.
  forEachStore(
      [](core::CacheStore& store, core::ManualClock& clock) {
        const std::string body(2000, 'b');
        putEntry(store, clock, "bundleup-api", "/a", "", body);
        putEntry(store, clock, "bundleup-api", "/b", "", body);
        putEntry(store, clock, "bundleup-api", "/c", "", body);
        store.flush();
        CHECK(store.stats().entries == 3);
        CHECK(has(store, "bundleup-api", "/a", ""));  // /a is now the most recently read
        putEntry(store, clock, "bundleup-api", "/d", "", body);
        store.flush();
        CHECK_FALSE(has(store, "bundleup-api", "/b", ""));  // least recently used
        CHECK(has(store, "bundleup-api", "/a", ""));
        CHECK(has(store, "bundleup-api", "/c", ""));
        CHECK(has(store, "bundleup-api", "/d", ""));
        core::CacheStats s = store.stats();
        CHECK(s.entries == 3);
        CHECK(s.bytes <= 7000);
        CHECK(s.evictions == 1);
        // Reading /c then /a makes /d the oldest.
        CHECK(has(store, "bundleup-api", "/c", ""));
        CHECK(has(store, "bundleup-api", "/a", ""));
        store.flush();
        putEntry(store, clock, "bundleup-api", "/e", "", body);
        store.flush();
        CHECK_FALSE(has(store, "bundleup-api", "/d", ""));
        CHECK(has(store, "bundleup-api", "/c", ""));
        CHECK(has(store, "bundleup-api", "/a", ""));
        CHECK(has(store, "bundleup-api", "/e", ""));
        // An entry larger than the whole bound is never stored (and evicts nothing).
        putEntry(store, clock, "bundleup-api", "/huge", "", std::string(8000, 'h'));
        store.flush();
        CHECK_FALSE(has(store, "bundleup-api", "/huge", ""));
        CHECK(store.stats().entries == 3);
      },
      7000);
}

TEST_CASE("cache store: invalidate drops one identity's path, any query") {
  forEachStore([](core::CacheStore& store, core::ManualClock& clock) {
    putEntry(store, clock, "bundleup-api", "/v1/webhooks", "", "list");
    putEntry(store, clock, "bundleup-api", "/v1/webhooks", "page=2", "list p2");
    putEntry(store, clock, "bundleup-api", "/v1/webhooks/wh_1", "", "item");
    putEntry(store, clock, "bundleup-api", "/v1/webhooks/wh_2", "", "other item");
    putEntry(store, clock, "bundleup-api", "/v1/webhooks", "", "bob's list", "bob");
    putEntry(store, clock, "bundleup-unify", "/v1/webhooks", "", "other upstream");
    store.flush();

    // DELETE /v1/webhooks/wh_1 by alice: the resource and its collection, for alice only.
    size_t dropped = 0;
    for (const auto& path : core::invalidationPaths("/v1/webhooks/wh_1")) {
      dropped += store.invalidate("bundleup-api", tagFor("alice"), path);
    }
    CHECK(dropped == 3);
    CHECK_FALSE(has(store, "bundleup-api", "/v1/webhooks", ""));
    CHECK_FALSE(has(store, "bundleup-api", "/v1/webhooks", "page=2"));
    CHECK_FALSE(has(store, "bundleup-api", "/v1/webhooks/wh_1", ""));
    CHECK(has(store, "bundleup-api", "/v1/webhooks/wh_2", ""));
    CHECK(has(store, "bundleup-api", "/v1/webhooks", "", "bob"));
    CHECK(has(store, "bundleup-unify", "/v1/webhooks", ""));
    store.flush();
    CHECK_FALSE(has(store, "bundleup-api", "/v1/webhooks", ""));
    CHECK(store.stats().entries == 3);

    // A fresh response stored after the invalidation is served.
    putEntry(store, clock, "bundleup-api", "/v1/webhooks", "", "new list");
    CHECK(store.get(keyFor("bundleup-api", "/v1/webhooks", ""))->body == "new list");
    store.flush();
    CHECK(store.get(keyFor("bundleup-api", "/v1/webhooks", ""))->body == "new list");
  });
}

TEST_CASE("cache store: invalidatePrefix drops a BOSA connector's entries for one identity") {
  forEachStore([](core::CacheStore& store, core::ManualClock& clock) {
    putEntry(store, clock, "bosa", "/connectors/github/list_pull_requests", "", "prs");
    putEntry(store, clock, "bosa", "/connectors/github/get_repository", "", "repo");
    putEntry(store, clock, "bosa", "/connectors/github/list_pull_requests", "", "bob", "bob");
    putEntry(store, clock, "bosa", "/connectors/gitlab/list_merge_requests", "", "mrs");
    putEntry(store, clock, "bosa", "/connectors/githubx/list_y", "", "other connector");
    store.flush();
    const auto prefix = core::bosaConnectorPrefix("/connectors/github/create_issue");
    REQUIRE(prefix.has_value());
    CHECK(store.invalidatePrefix("bosa", tagFor("alice"), *prefix) == 2);
    CHECK_FALSE(has(store, "bosa", "/connectors/github/list_pull_requests", ""));
    CHECK_FALSE(has(store, "bosa", "/connectors/github/get_repository", ""));
    CHECK(has(store, "bosa", "/connectors/github/list_pull_requests", "", "bob"));
    CHECK(has(store, "bosa", "/connectors/gitlab/list_merge_requests", ""));
    CHECK(has(store, "bosa", "/connectors/githubx/list_y", ""));
  });
}

TEST_CASE("cache store: invalidation cancels a put that is not written yet") {
  forEachStore([](core::CacheStore& store, core::ManualClock& clock) {
    putEntry(store, clock, "bundleup-api", "/v1/connections", "", "old");
    CHECK(store.invalidate("bundleup-api", tagFor(), "/v1/connections") == 1);
    CHECK_FALSE(has(store, "bundleup-api", "/v1/connections", ""));
    store.flush();
    CHECK_FALSE(has(store, "bundleup-api", "/v1/connections", ""));
    CHECK(store.stats().entries == 0);
  });
}

TEST_CASE("cache store: purge by upstream, by prefix, and all") {
  forEachStore([](core::CacheStore& store, core::ManualClock& clock) {
    putEntry(store, clock, "bundleup-api", "/v1/connections", "", "1");
    putEntry(store, clock, "bundleup-api", "/v1/connections/c1", "", "2");
    putEntry(store, clock, "bundleup-api", "/v1/webhooks", "", "3");
    putEntry(store, clock, "bundleup-unify", "/v1/connections", "", "4");
    putEntry(store, clock, "bosa", "/connectors/github/list_x", "", "5");
    putEntry(store, clock, "bosa", "/connectors/github/list_x", "", "6", "bob");
    store.flush();

    CHECK(store.purge("bundleup-api", "/v1/connections") == 2);
    CHECK_FALSE(has(store, "bundleup-api", "/v1/connections", ""));
    CHECK_FALSE(has(store, "bundleup-api", "/v1/connections/c1", ""));
    CHECK(has(store, "bundleup-api", "/v1/webhooks", ""));
    CHECK(has(store, "bundleup-unify", "/v1/connections", ""));

    CHECK(store.purge("", "/v1/") == 2);  // every upstream
    CHECK_FALSE(has(store, "bundleup-api", "/v1/webhooks", ""));
    CHECK_FALSE(has(store, "bundleup-unify", "/v1/connections", ""));

    CHECK(store.purge("bosa", "") == 2);  // every path and identity of one upstream
    CHECK(store.stats().entries == 0);

    putEntry(store, clock, "bosa", "/connectors/github/list_x", "", "7");
    putEntry(store, clock, "bundleiq", "/v1/notes", "", "8");
    CHECK(store.purge("", "") == 2);  // --all, including puts not yet written
    CHECK_FALSE(has(store, "bosa", "/connectors/github/list_x", ""));
    CHECK_FALSE(has(store, "bundleiq", "/v1/notes", ""));
    store.flush();
    CHECK(store.stats().entries == 0);
    CHECK(store.stats().bytes == 0);
    CHECK(store.purge("", "") == 0);
  });
}

TEST_CASE("lmdb cache store: long paths are indexed and still matched exactly") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto store = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
  const std::string base = "/v1/" + std::string(600, 'p');
  putEntry(*store, *clock, "bundleup-api", base, "", "a");
  putEntry(*store, *clock, "bundleup-api", base + "x", "", "b");
  store->flush();
  CHECK(store->invalidate("bundleup-api", tagFor(), base) == 1);
  CHECK_FALSE(has(*store, "bundleup-api", base, ""));
  CHECK(has(*store, "bundleup-api", base + "x", ""));
  CHECK(store->purge("bundleup-api", base + "x") == 1);
  CHECK(store->stats().entries == 0);
}

TEST_CASE("cache store: a refreshed entry stays one entry, found by invalidation and purge") {
  // A refresh rewrites an entry under the same key; the LMDB store then keeps its path-index
  // keys in place instead of deleting and re-adding them. Whatever the path length (long ones
  // are cut in the index key), the refreshed entry must stay reachable through both indexes.
  forEachStore([](core::CacheStore& store, core::ManualClock& clock) {
    for (const std::string& path : {std::string("/v1/webhooks"), "/v1/" + std::string(600, 'q')}) {
      CAPTURE(path.size());
      putEntry(store, clock, "bundleup-api", path, "", "v0");
      store.flush();
      const uint64_t one_entry_bytes = store.stats().bytes;
      for (int i = 1; i <= 3; ++i) {
        clock.advance(std::chrono::seconds(1));
        putEntry(store, clock, "bundleup-api", path, "", "v" + std::to_string(i));
        store.flush();
        CHECK(store.get(keyFor("bundleup-api", path, ""))->body == "v" + std::to_string(i));
      }
      CHECK(store.stats().entries == 1);
      CHECK(store.stats().bytes == one_entry_bytes);
      // by_identity (invalidate) finds it...
      CHECK(store.invalidate("bundleup-api", tagFor(), path) == 1);
      store.flush();
      CHECK_FALSE(has(store, "bundleup-api", path, ""));
      CHECK(store.stats().entries == 0);
      CHECK(store.stats().bytes == 0);
      // ...and so does by_path (purge), after refreshes of a new entry.
      putEntry(store, clock, "bundleup-api", path, "", "w0");
      store.flush();
      putEntry(store, clock, "bundleup-api", path, "", "w1");
      store.flush();
      CHECK(store.purge("bundleup-api", path.substr(0, 8)) == 1);
      store.flush();
      CHECK(store.stats().entries == 0);
      // Nothing of it is left in an index: the next invalidation finds nothing.
      CHECK(store.invalidate("bundleup-api", tagFor(), path) == 0);
    }
  });
}

TEST_CASE("lmdb cache store: entries persist across reopen") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  int64_t stored_at = 0;
  {
    auto store = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
    putEntry(*store, *clock, "bundleup-api", "/v1/connections", "", "persisted");
    stored_at = nowMs(*clock);
    CHECK(has(*store, "bundleup-api", "/v1/connections", ""));
    // No flush: closing applies what is queued.
  }
  clock->advance(std::chrono::seconds(10));
  auto store = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
  REQUIRE(store->healthy());
  auto got = store->get(keyFor("bundleup-api", "/v1/connections", ""));
  REQUIRE(got.has_value());
  CHECK(got->body == "persisted");
  CHECK(got->stored_unix_ms == stored_at);
  const core::CacheStats s = store->stats();
  CHECK(s.entries == 1);
  CHECK(s.hits >= 2);  // counters persist too (keywayctl shows the hit ratio)
  CHECK(s.oldest_stored_unix_ms == stored_at);
}

TEST_CASE("lmdb cache store: a second instance (keywayctl) purges and the first sees it at once") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto daemon = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
  putEntry(*daemon, *clock, "bundleup-api", "/v1/connections", "", "1");
  putEntry(*daemon, *clock, "bundleup-api", "/v1/webhooks", "", "2");
  putEntry(*daemon, *clock, "bosa", "/connectors/github/list_x", "", "3");
  daemon->flush();
  CHECK(has(*daemon, "bundleup-api", "/v1/connections", ""));

  {
    auto ctl = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
    const core::CacheStats s = ctl->stats();
    CHECK(s.entries == 3);
    CHECK(s.bytes > 0);
    CHECK(ctl->purge("bundleup-api", "/v1/connections") == 1);
  }
  CHECK_FALSE(has(*daemon, "bundleup-api", "/v1/connections", ""));
  CHECK(has(*daemon, "bundleup-api", "/v1/webhooks", ""));

  // A put the daemon has not written yet when the purge happens is not served afterwards.
  putEntry(*daemon, *clock, "bundleiq", "/v1/notes", "", "pending");
  {
    auto ctl = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
    ctl->purge("", "");
  }
  CHECK_FALSE(has(*daemon, "bundleiq", "/v1/notes", ""));
  CHECK_FALSE(has(*daemon, "bundleup-api", "/v1/webhooks", ""));
  daemon->flush();
  CHECK(daemon->stats().entries == 0);
  // And the daemon keeps caching afterwards.
  putEntry(*daemon, *clock, "bundleiq", "/v1/notes", "", "after");
  daemon->flush();
  CHECK(daemon->get(keyFor("bundleiq", "/v1/notes", ""))->body == "after");
}

TEST_CASE("lmdb cache store: another process purges; the running store sees it at once") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto daemon = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
  putEntry(*daemon, *clock, "bundleup-api", "/v1/connections", "", "1");
  putEntry(*daemon, *clock, "bundleup-api", "/v1/webhooks", "", "2");
  daemon->flush();

  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child is keywayctl: its own LMDB handle on the same files.
    int code = 0;
    {
      auto ctl = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
      if (!ctl->healthy() || ctl->stats().entries != 2) code = 3;
      if (code == 0 && ctl->purge("bundleup-api", "/v1/conn") != 1) code = 4;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_FALSE(has(*daemon, "bundleup-api", "/v1/connections", ""));
  CHECK(has(*daemon, "bundleup-api", "/v1/webhooks", ""));
  CHECK(daemon->stats().entries == 1);
}

TEST_CASE("lmdb cache store: a full map evicts and retries, and the store stays healthy") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  Warnings warnings;
  auto options = lmdbOptions(dir, clock, &warnings);
  options.max_bytes = size_t{64} << 20;  // the byte bound is not what stops us: the map is
  options.map_size = size_t{512} << 10;
  auto store = storage::LmdbCacheStore::open(options);
  REQUIRE(store->healthy());
  const std::string body(20'000, 'm');
  for (int i = 0; i < 60; ++i) {
    putEntry(*store, *clock, "bundleup-api", "/v1/items/" + std::to_string(i), "", body);
    store->flush();
    CAPTURE(i);
    REQUIRE(has(*store, "bundleup-api", "/v1/items/" + std::to_string(i), ""));
  }
  CHECK(store->healthy());
  const core::CacheStats s = store->stats();
  CHECK(s.entries < 60);
  CHECK(s.evictions > 0);
  CHECK(s.degraded_events > 0);
  CHECK(warnings.contains("map is full"));
  // Entries too large for the map are refused up front.
  putEntry(*store, *clock, "bundleup-api", "/big", "", std::string(200'000, 'x'));
  store->flush();
  CHECK_FALSE(has(*store, "bundleup-api", "/big", ""));
  CHECK(store->healthy());
}

TEST_CASE("lmdb cache store: a corrupted data file is moved aside and recreated empty") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  {
    auto store = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
    putEntry(*store, *clock, "bundleup-api", "/v1/connections", "", "before");
  }
  const std::string data = dir.cacheDir() + "/data.mdb";
  SUBCASE("garbage over the whole file") {
    const auto size = fs::file_size(data);
    std::ofstream f(data, std::ios::binary | std::ios::trunc);
    for (uintmax_t i = 0; i < size; ++i) f.put(static_cast<char>((i * 7919) % 251));
  }
  SUBCASE("truncated file") {
    fs::resize_file(data, 100);
  }
  SUBCASE("garbage in the lock file too") {
    std::ofstream(data, std::ios::binary | std::ios::trunc) << std::string(8192, '\xAB');
    std::ofstream(dir.cacheDir() + "/lock.mdb", std::ios::binary | std::ios::trunc)
        << std::string(8192, '\xCD');
  }
  Warnings warnings;
  auto store = storage::LmdbCacheStore::open(lmdbOptions(dir, clock, &warnings));
  CHECK(store->healthy());
  CHECK(warnings.contains("moving it aside"));
  CHECK_FALSE(has(*store, "bundleup-api", "/v1/connections", ""));
  putEntry(*store, *clock, "bundleup-api", "/v1/connections", "", "after");
  store->flush();
  CHECK(store->get(keyFor("bundleup-api", "/v1/connections", ""))->body == "after");
  bool moved_aside = false;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    if (entry.path().filename().string().rfind("cache.corrupt-", 0) == 0) moved_aside = true;
  }
  CHECK(moved_aside);
}

TEST_CASE("lmdb cache store: an unusable directory degrades to a cheap no-op, never a crash") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  Warnings warnings;
  auto options = lmdbOptions(dir, clock, &warnings);
  SUBCASE("parent is a regular file") {
    std::ofstream(dir.path() + "/file") << "x";
    options.dir = dir.path() + "/file/cache";
  }
  SUBCASE("a directory holding foreign files is never moved aside") {
    fs::create_directories(options.dir);
    std::ofstream(options.dir + "/data.mdb") << "not lmdb";
    std::ofstream(options.dir + "/master.key") << "precious";
  }
  auto store = storage::LmdbCacheStore::open(options);
  CHECK_FALSE(store->healthy());
  CHECK(warnings.contains("disabled"));
  const std::string k = keyFor("bundleup-api", "/v1/connections", "");
  store->put(k, metaFor("bundleup-api", "/v1/connections"), response(*clock, "x"));
  CHECK_FALSE(store->get(k).has_value());
  CHECK(store->invalidate("bundleup-api", tagFor(), "/v1/connections") == 0);
  CHECK(store->purge("", "") == 0);
  store->flush();
  const core::CacheStats s = store->stats();
  CHECK_FALSE(s.healthy);
  CHECK(s.entries == 0);
  CHECK(s.dropped_writes >= 1);
  CHECK(s.degraded_events >= 1);
  if (fs::exists(dir.path() + "/cache/master.key")) {
    std::ifstream f(dir.path() + "/cache/master.key");
    std::string content;
    f >> content;
    CHECK(content == "precious");
  }
}

TEST_CASE("lmdb cache store: concurrent readers, writers and invalidations") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto options = lmdbOptions(dir, clock);
  options.max_bytes = 200'000;  // forces evictions while the threads run
  auto store = storage::LmdbCacheStore::open(options);
  std::atomic<bool> wrong{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 400; ++i) {
        const std::string path = "/v1/items/" + std::to_string(i % 50);
        const std::string user = "user" + std::to_string(t % 2);
        const std::string body = path + "#" + user;
        putEntry(*store, *clock, "bundleup-api", path, "", body + std::string(500, '.'), user);
        if (auto got = store->get(keyFor("bundleup-api", path, "", user))) {
          if (got->body.rfind(body, 0) != 0) wrong = true;  // never another identity's entry
        }
        if (i % 37 == 0) store->invalidate("bundleup-api", tagFor(user), path);
        if (i % 101 == 0) store->stats();
      }
    });
  }
  for (auto& th : threads) th.join();
  store->flush();
  CHECK_FALSE(wrong.load());
  const core::CacheStats s = store->stats();
  CHECK(s.healthy);
  CHECK(s.bytes <= 200'000);
  CHECK(s.entries > 0);
}

// ---------------------------------------------------------------------------------------------
// Memory bounds (bench scenario f): what the store keeps on the heap must not grow with
// the size of a burst or of the key set.

namespace {

// AddressSanitizer and ThreadSanitizer replace malloc: mallinfo2 and malloc_trim then say
// nothing about the heap.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kHeapIsGlibc = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kHeapIsGlibc = false;
#else
constexpr bool kHeapIsGlibc = true;
#endif
#else
constexpr bool kHeapIsGlibc = true;
#endif

// Bytes in use on the heap, all arenas (glibc), mmapped chunks included.
size_t heapInUse() {
  const struct mallinfo2 mi = ::mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

}  // namespace

TEST_CASE("lmdb cache store: a burst of puts and reads leaves a bounded heap behind") {
  // LMDB keeps every page a write transaction dirtied on its own free list until the environment
  // closes, so one transaction applying a whole burst would pin the burst's size on the heap for
  // the life of the process (32 MiB for this test before the writer split its transactions).
  if (!kHeapIsGlibc) {
    MESSAGE("skipped: the heap is not glibc's (sanitizer build)");
    return;
  }
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto options = lmdbOptions(dir, clock);
  options.map_size = size_t{512} << 20;
  SUBCASE("far from the byte bound (reads within touch_interval are not rewritten)") {
    options.max_bytes = size_t{256} << 20;
  }
  SUBCASE("past half of the byte bound (every read is rewritten)") {
    options.max_bytes = size_t{16} << 20;
  }
  auto store = storage::LmdbCacheStore::open(options);
  REQUIRE(store->healthy());
  putEntry(*store, *clock, "bundleup-unify", "/v1/chat/channels", "warm", "x");
  store->flush();
  const size_t before = heapInUse();

  constexpr int kEntries = 20'000;
  const std::string body(300, 'c');
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kEntries; ++i) {
      putEntry(*store, *clock, "bundleup-unify", "/v1/chat/channels",
               "limit=100&cursor=" + std::to_string(i), body + std::to_string(round));
    }
    for (int i = 0; i < kEntries; ++i) {
      has(*store, "bundleup-unify", "/v1/chat/channels", "limit=100&cursor=" + std::to_string(i));
    }
    store->flush();
  }
  const core::CacheStats s = store->stats();
  CHECK(s.entries > kEntries / 2);
  CHECK(s.bytes <= options.max_bytes);
  auto got = store->get(keyFor("bundleup-unify", "/v1/chat/channels", "limit=100&cursor=7"));
  if (got) CHECK(got->body == body + "1");
  const size_t after = heapInUse();
  const size_t grown = after > before ? after - before : 0;
  MESSAGE("heap in use grew by " << grown / 1024 << " KiB over " << kEntries << " keys");
  CHECK(grown < size_t{6} << 20);
}

TEST_CASE("lmdb cache store: the pending bound never keeps a large entry out") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto options = lmdbOptions(dir, clock);
  options.max_pending_bytes = 1024;  // far below the entry: accepted because nothing is pending
  auto store = storage::LmdbCacheStore::open(options);
  const std::string body(100'000, 'p');
  putEntry(*store, *clock, "bundleiq", "/v1/notes", "", body);
  auto pending = store->get(keyFor("bundleiq", "/v1/notes", ""));
  REQUIRE(pending.has_value());
  CHECK(pending->body == body);
  store->flush();
  auto stored = store->get(keyFor("bundleiq", "/v1/notes", ""));
  REQUIRE(stored.has_value());
  CHECK(stored->body == body);
  CHECK(store->stats().dropped_writes == 0);
}

TEST_CASE("lmdb cache store: a sweep removes more expired entries than one transaction holds") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto store = storage::LmdbCacheStore::open(lmdbOptions(dir, clock));
  constexpr int kExpiring = 500;
  for (int i = 0; i < kExpiring; ++i) {
    store->put(keyFor("bundleup-api", "/v1/items", "page=" + std::to_string(i)),
               metaFor("bundleup-api", "/v1/items"), response(*clock, "old", 1'000, 1'000));
  }
  store->put(keyFor("bundleup-api", "/v1/keep", ""), metaFor("bundleup-api", "/v1/keep"),
             response(*clock, "kept", 60'000, 3'600'000));
  store->flush();
  CHECK(store->stats().entries == kExpiring + 1);
  clock->advance(std::chrono::seconds(3));
  CHECK(store->sweepExpired() == kExpiring);
  const core::CacheStats s = store->stats();
  CHECK(s.entries == 1);
  CHECK(s.expired == kExpiring);
  CHECK(has(*store, "bundleup-api", "/v1/keep", ""));
}

TEST_CASE("lmdb cache store: below half the bound, reads within touch_interval keep their LRU place") {
  // 2000-byte bodies, 20000 bytes: nine entries fit. Three are put, /a is read, then more are
  // put until the first eviction.
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto options = lmdbOptions(dir, clock);
  options.max_bytes = 20'000;
  options.touch_interval = std::chrono::seconds(30);
  auto store = storage::LmdbCacheStore::open(options);
  const std::string body(2000, 'b');
  putEntry(*store, *clock, "bundleup-api", "/a", "", body);
  putEntry(*store, *clock, "bundleup-api", "/b", "", body);
  putEntry(*store, *clock, "bundleup-api", "/c", "", body);
  store->flush();
  std::string evicted_first;
  SUBCASE("read within the interval: not recorded, /a stays the oldest") {
    clock->advance(std::chrono::seconds(29));
    evicted_first = "/a";
  }
  SUBCASE("read after the interval: recorded, /b becomes the oldest") {
    clock->advance(std::chrono::seconds(31));
    evicted_first = "/b";
  }
  CHECK(has(*store, "bundleup-api", "/a", ""));
  store->flush();
  for (int i = 0; store->stats().evictions == 0 && i < 20; ++i) {
    putEntry(*store, *clock, "bundleup-api", "/n" + std::to_string(i), "", body);
    store->flush();
  }
  REQUIRE(store->stats().evictions == 1);
  CHECK_FALSE(has(*store, "bundleup-api", evicted_first, ""));
  CHECK(has(*store, "bundleup-api", evicted_first == "/a" ? "/b" : "/a", ""));
  CHECK(has(*store, "bundleup-api", "/c", ""));
}

TEST_CASE("lmdb cache store: the periodic sweep clears a mass expiry over several turns") {
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto options = lmdbOptions(dir, clock);
  options.sweep_interval = std::chrono::milliseconds(1);
  auto store = storage::LmdbCacheStore::open(options);
  constexpr int kExpiring = 2'500;  // more than one writer turn sweeps (16 x 64)
  for (int i = 0; i < kExpiring; ++i) {
    store->put(keyFor("bundleup-api", "/v1/items", "page=" + std::to_string(i)),
               metaFor("bundleup-api", "/v1/items"), response(*clock, "old", 1'000, 1'000));
  }
  store->put(keyFor("bundleup-api", "/v1/keep", ""), metaFor("bundleup-api", "/v1/keep"),
             response(*clock, "kept", 60'000, 3'600'000));
  store->flush();
  clock->advance(std::chrono::seconds(3));
  core::CacheStats s = store->stats();
  for (int i = 0; i < 200 && s.entries > 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    s = store->stats();
  }
  CHECK(s.entries == 1);
  CHECK(s.expired == kExpiring);
  CHECK(has(*store, "bundleup-api", "/v1/keep", ""));
}

namespace {

// Resident anonymous memory of this process, KiB.
long rssAnonKib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stol(line.substr(8));
  }
  return -1;
}

}  // namespace

TEST_CASE("lmdb cache store: free heap left behind by a burst is given back after a sweep") {
  if (!kHeapIsGlibc) {
    MESSAGE("skipped: the heap is not glibc's (sanitizer build)");
    return;
  }
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto options = lmdbOptions(dir, clock);
  options.sweep_interval = std::chrono::milliseconds(1);
  SUBCASE("above the threshold: released") { options.release_free_heap_above = size_t{16} << 20; }
  SUBCASE("threshold 0: never") { options.release_free_heap_above = 0; }
  auto store = storage::LmdbCacheStore::open(options);
  // A burst: 96 MiB in 64 KiB blocks (below the mmap threshold, so on the heap), then three of
  // every four freed. The survivors pin the freed runs between them: glibc keeps them resident.
  std::vector<char*> blocks;
  for (int i = 0; i < 1536; ++i) {
    char* b = static_cast<char*>(::malloc(64 * 1024));
    REQUIRE(b != nullptr);
    std::memset(b, i & 0xFF, 64 * 1024);
    blocks.push_back(b);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (i % 4 != 3) {
      ::free(blocks[i]);
      blocks[i] = nullptr;
    }
  }
  const long held = rssAnonKib();
  long now = held;
  const int polls = options.release_free_heap_above != 0 ? 200 : 40;  // 10 s, or 2 s
  for (int i = 0; i < polls && held - now < 32 * 1024; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    now = rssAnonKib();
  }
  MESSAGE("RssAnon " << held << " KiB after the burst, " << now << " KiB after the sweep");
  if (options.release_free_heap_above != 0) {
    CHECK(held - now >= 32 * 1024);
  } else {
    CHECK(held - now < 32 * 1024);
  }
  for (char* b : blocks) ::free(b);
}

TEST_CASE("lmdb cache store: a read right after a put sees it while the writer commits it") {
  // get() reads the environment, then the pending map. A commit that lands between the two
  // used to retire the pending put after the snapshot was taken: the read then missed (CI:
  // MISS then MISS for one key) or served the previous, stale copy (CI: a second stale-while-
  // revalidate refresh). Every read here follows its put at once while the writer is busy
  // committing the other threads' puts.
  TempDir dir;
  auto clock = std::make_shared<core::ManualClock>();
  auto options = lmdbOptions(dir, clock);
  options.max_pending_bytes = size_t{256} << 20;  // a slow writer must not drop puts here
  auto store = storage::LmdbCacheStore::open(options);
  REQUIRE(store->healthy());
  std::atomic<int> missing{0};
  std::atomic<int> older{0};
  auto work = [&](int t) {
    const std::string same = "/v1/same/" + std::to_string(t);
    for (int i = 0; i < 10'000; ++i) {
      // A new key (must hit) and a rewritten key (must give the newest body).
      const std::string query = "t=" + std::to_string(t) + "&n=" + std::to_string(i);
      putEntry(*store, *clock, "bundleup-api", "/v1/new", query, "new");
      if (!has(*store, "bundleup-api", "/v1/new", query)) ++missing;
      const std::string body = "v" + std::to_string(i);
      putEntry(*store, *clock, "bundleup-api", same, "", body);
      auto got = store->get(keyFor("bundleup-api", same, ""));
      if (!got || got->body != body) ++older;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(work, t);
  for (auto& th : threads) th.join();
  CHECK(missing.load() == 0);
  CHECK(older.load() == 0);
  CHECK(store->stats().dropped_writes == 0);
}
