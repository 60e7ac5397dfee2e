// Tests of the schema stores: the SchemaStore contract against LmdbSchemaStore and
// MemorySchemaStore, and the LMDB specifics (another process's save seen at once, persistence,
// durability setting, size bound, map growth, damaged records, file modes).
#include <doctest/doctest.h>
#include <lmdb.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/schema_store.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/lmdb_schema_store.hpp"
#include "storage/memory_schema_store.hpp"
#include "tests/unit/storage/test_util.hpp"

namespace keyway::storage {
namespace {

using core::ErrorCode;
using core::StoredSchemas;
using keyway::testing::contains;
using keyway::testing::fileMode;
using keyway::testing::listFiles;
using keyway::testing::runInChild;
using keyway::testing::TempDir;

const char* kDoc = R"({"github":{"list_pull_requests":{"method":"POST","path":"/connectors/github/list_pull_requests"}}})";

// Both implementations behind the interface, so every contract test runs against each.
struct StoreUnderTest {
  std::string name;
  std::unique_ptr<TempDir> dir;
  std::shared_ptr<core::SchemaStore> store;
};

std::vector<StoreUnderTest> stores() {
  std::vector<StoreUnderTest> out;
  StoreUnderTest memory;
  memory.name = "memory";
  memory.store = std::make_shared<MemorySchemaStore>();
  out.push_back(std::move(memory));
  StoreUnderTest lmdb;
  lmdb.name = "lmdb";
  lmdb.dir = std::make_unique<TempDir>();
  auto opened = LmdbSchemaStore::open(*lmdb.dir / "state");
  REQUIRE(opened.ok());
  lmdb.store = opened.value();
  out.push_back(std::move(lmdb));
  return out;
}

TEST_CASE("schema store: save/load round trip; missing upstream is an empty optional") {
  for (auto& s : stores()) {
    CAPTURE(s.name);
    auto missing = s.store->load("bosa");
    REQUIRE(missing.ok());
    CHECK_FALSE(missing->has_value());

    REQUIRE(s.store->save("bosa", {kDoc, 1'700'000'000'123}).ok());
    auto loaded = s.store->load("bosa");
    REQUIRE(loaded.ok());
    REQUIRE(loaded->has_value());
    CHECK((*loaded)->document == kDoc);
    CHECK((*loaded)->fetched_unix_ms == 1'700'000'000'123);

    // Other upstreams are independent; a save replaces the whole record.
    CHECK_FALSE(s.store->load("bosa-staging")->has_value());
    REQUIRE(s.store->save("bosa-staging", {"{}", -5}).ok());
    REQUIRE(s.store->save("bosa", {"{\"x\":{}}", 42}).ok());
    CHECK((*s.store->load("bosa"))->document == "{\"x\":{}}");
    CHECK((*s.store->load("bosa"))->fetched_unix_ms == 42);
    CHECK((*s.store->load("bosa-staging"))->document == "{}");
    CHECK((*s.store->load("bosa-staging"))->fetched_unix_ms == -5);

    // Bytes are kept exactly, NULs and invalid UTF-8 included (the store does not judge JSON).
    const std::string odd("{\"a\":\"\0\xff\"}  \n", 13);
    REQUIRE(s.store->save("bosa", {odd, 7}).ok());
    CHECK((*s.store->load("bosa"))->document == odd);
    REQUIRE(s.store->save("bosa", {"", 8}).ok());
    CHECK((*s.store->load("bosa"))->document.empty());
  }
}

TEST_CASE("schema store: invalid upstream names are refused") {
  for (auto& s : stores()) {
    CAPTURE(s.name);
    for (const std::string& bad : {std::string(""), std::string(600, 'a'), std::string("a/b"),
                                   std::string("nul\0x", 5)}) {
      auto saved = s.store->save(bad, {kDoc, 1});
      REQUIRE_FALSE(saved.ok());
      CHECK(saved.error().code == ErrorCode::kBadRequest);
      CHECK(contains(saved.error().message, "upstream"));
      auto loaded = s.store->load(bad);
      REQUIRE_FALSE(loaded.ok());
      CHECK(loaded.error().code == ErrorCode::kBadRequest);
    }
  }
}

TEST_CASE("schema store: generation changes on every save, not on loads") {
  for (auto& s : stores()) {
    CAPTURE(s.name);
    const uint64_t g0 = s.store->generation();
    CHECK(s.store->generation() == g0);
    REQUIRE(s.store->save("bosa", {kDoc, 1}).ok());
    const uint64_t g1 = s.store->generation();
    CHECK(g1 != g0);
    (void)s.store->load("bosa");
    CHECK(s.store->generation() == g1);
    REQUIRE(s.store->save("bosa", {kDoc, 1}).ok());  // same content still counts as a change
    const uint64_t g2 = s.store->generation();
    CHECK(g2 != g1);
    REQUIRE(s.store->save("other", {kDoc, 1}).ok());
    CHECK(s.store->generation() != g2);
    // A refused save changes nothing.
    CHECK_FALSE(s.store->save("", {kDoc, 1}).ok());
    const uint64_t g3 = s.store->generation();
    CHECK_FALSE(s.store->save("", {kDoc, 1}).ok());
    CHECK(s.store->generation() == g3);
  }
}

TEST_CASE("schema store: a document over the limit is refused and the stored one kept") {
  for (auto& s : stores()) {
    CAPTURE(s.name);
    REQUIRE(s.store->save("bosa", {kDoc, 1}).ok());
    const uint64_t g = s.store->generation();
    const std::string huge(kMaxSchemaDocumentBytes + 1, ' ');
    auto saved = s.store->save("bosa", {huge, 2});
    REQUIRE_FALSE(saved.ok());
    CHECK(saved.error().code == ErrorCode::kPayloadTooLarge);
    CHECK(contains(saved.error().message, "bosa"));
    CHECK(contains(saved.error().message, "limit"));
    CHECK(saved.error().message.size() < 400);  // says so; never echoes the document
    CHECK((*s.store->load("bosa"))->document == kDoc);
    CHECK(s.store->generation() == g);
  }
}

TEST_CASE("schema store: concurrent saves and loads from many threads") {
  for (auto& s : stores()) {
    CAPTURE(s.name);
    const uint64_t g0 = s.store->generation();
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        const std::string upstream = "bosa" + std::to_string(t % 2);
        for (int i = 0; i < 25; ++i) {
          const std::string doc = "{\"t" + std::to_string(t) + "\":" + std::to_string(i) + "}";
          if (!s.store->save(upstream, {doc, i}).ok()) ++failures;
          auto loaded = s.store->load(upstream);
          // Whatever another thread saved last, the record is always whole.
          if (!loaded.ok() || !loaded->has_value() || (*loaded)->document.front() != '{' ||
              (*loaded)->document.back() != '}') {
            ++failures;
          }
          (void)s.store->generation();
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures.load() == 0);
    CHECK(s.store->generation() != g0);
    if (s.name == "memory") CHECK(s.store->generation() == g0 + 100);
  }
}

TEST_CASE("lmdb schema store: a second instance in the process shares the environment") {
  TempDir dir;
  auto daemon = LmdbSchemaStore::open(dir / "state");
  auto ctl = LmdbSchemaStore::open(dir / "state");
  REQUIRE(daemon.ok());
  REQUIRE(ctl.ok());
  auto env1 = LmdbEnv::open(schemaEnvPath(dir / "state"));
  auto env2 = LmdbEnv::open(schemaEnvPath(dir / "state") + "/");
  REQUIRE(env1.ok());
  REQUIRE(env2.ok());
  CHECK(env1->get() == env2->get());  // one MDB_env per file per process
  CHECK((*daemon)->path() == (*env1)->path());

  const uint64_t g0 = (*daemon)->generation();
  REQUIRE((*ctl)->save("bosa", {kDoc, 99}).ok());
  CHECK((*daemon)->generation() != g0);
  CHECK((*(*daemon)->load("bosa"))->fetched_unix_ms == 99);

  // The environment is durable: a no-sync open of the same path is refused.
  LmdbEnvOptions nosync;
  nosync.durable = false;
  CHECK_FALSE(LmdbEnv::open(schemaEnvPath(dir / "state"), nosync).ok());
}

TEST_CASE("lmdb schema store: a save by another process is seen at once") {
  TempDir dir;
  auto daemon = LmdbSchemaStore::open(dir / "state");
  REQUIRE(daemon.ok());
  REQUIRE((*daemon)->save("bosa", {"{\"old\":{}}", 1}).ok());
  const uint64_t g0 = (*daemon)->generation();
  CHECK((*daemon)->generation() == g0);  // stable while nobody writes

  const int rc = runInChild([&] {
    auto ctl = LmdbSchemaStore::open(dir / "state");
    if (!ctl.ok()) return 10;
    auto before = (*ctl)->load("bosa");
    if (!before.ok() || !before->has_value() || (*before)->document != "{\"old\":{}}") return 11;
    if (!(*ctl)->save("bosa", {kDoc, 1234}).ok()) return 12;
    return 0;
  });
  REQUIRE(rc == 0);
  const uint64_t g1 = (*daemon)->generation();
  CHECK(g1 != g0);
  auto loaded = (*daemon)->load("bosa");
  REQUIRE(loaded.ok());
  REQUIRE(loaded->has_value());
  CHECK((*loaded)->document == kDoc);
  CHECK((*loaded)->fetched_unix_ms == 1234);
  CHECK((*daemon)->generation() == g1);

  // And the other way round: the child sees the parent's save.
  REQUIRE((*daemon)->save("bosa", {"{\"new\":{}}", 5}).ok());
  const int rc2 = runInChild([&] {
    auto ctl = LmdbSchemaStore::open(dir / "state");
    if (!ctl.ok()) return 10;
    auto seen = (*ctl)->load("bosa");
    return seen.ok() && seen->has_value() && (*seen)->document == "{\"new\":{}}" ? 0 : 13;
  });
  CHECK(rc2 == 0);
}

TEST_CASE("lmdb schema store: persists across reopen; creates private files") {
  TempDir dir;
  uint64_t g = 0;
  {
    auto store = LmdbSchemaStore::open(dir / "state");
    REQUIRE(store.ok());
    REQUIRE((*store)->save("bosa", {kDoc, 77}).ok());
    g = (*store)->generation();
  }  // the last reference: the environment is closed
  {
    auto store = LmdbSchemaStore::open(dir / "state");
    REQUIRE(store.ok());
    auto loaded = (*store)->load("bosa");
    REQUIRE(loaded.ok());
    REQUIRE(loaded->has_value());
    CHECK((*loaded)->document == kDoc);
    CHECK((*loaded)->fetched_unix_ms == 77);
    CHECK((*store)->generation() == g);  // the counter persists too: no false "changed"
  }
  CHECK(fileMode(dir / "state") == 0700);
  CHECK(fileMode(schemaEnvPath(dir / "state")) == 0700);
  const auto files = listFiles(schemaEnvPath(dir / "state"));
  CHECK(files.size() == 2);
  for (const auto& f : files) {
    CAPTURE(f);
    CHECK(fileMode(f) == 0600);
  }
}

TEST_CASE("lmdb schema store: a full map grows instead of failing the save") {
  TempDir dir;
  auto store = LmdbSchemaStore::open(dir / "state", size_t{1} << 20);  // 1 MiB map
  REQUIRE(store.ok());
  std::string big(3u << 20, 'x');
  big.front() = '{';
  big.back() = '}';
  auto saved = (*store)->save("bosa", {big, 3});
  REQUIRE_MESSAGE(saved.ok(), (saved.ok() ? std::string() : saved.error().message));
  CHECK((*(*store)->load("bosa"))->document == big);
  MDB_envinfo info{};
  REQUIRE(mdb_env_info(LmdbEnv::open(schemaEnvPath(dir / "state")).value()->raw(), &info) == 0);
  CHECK(info.me_mapsize > (size_t{3} << 20));
  CHECK(info.me_mapsize <= kMaxSchemaMapSize);
}

TEST_CASE("lmdb schema store: damaged records are errors, never crashes") {
  TempDir dir;
  auto store = LmdbSchemaStore::open(dir / "state");
  REQUIRE(store.ok());
  REQUIRE((*store)->save("bosa", {kDoc, 1}).ok());
  auto env = LmdbEnv::open(schemaEnvPath(dir / "state")).value();
  const MDB_dbi schemas = env->openDbi("schemas").value();
  const MDB_dbi meta = env->openDbi("meta").value();

  for (const std::string& garbage :
       {std::string(), std::string("\x01short", 6), std::string(20, '\x02'),
        std::string("\x00\x00\x00\x00\x00\x00\x00\x00\x00{}", 11)}) {
    REQUIRE(env->update([&](LmdbTxn& txn) { return txn.put(schemas, "bosa", garbage); }).ok());
    auto loaded = (*store)->load("bosa");
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().code == ErrorCode::kInternal);
    CHECK(contains(loaded.error().message, "damaged"));
    CHECK(contains(loaded.error().message, "keywayctl schemas refresh"));
  }
  // A damaged counter: generation() still answers, and the next save still changes it.
  const uint64_t before = (*store)->generation();
  REQUIRE(env->update([&](LmdbTxn& txn) { return txn.put(meta, "generation", "xyz"); }).ok());
  CHECK((*store)->generation() == before);
  REQUIRE((*store)->save("bosa", {kDoc, 2}).ok());
  CHECK((*store)->generation() != before);
  CHECK((*(*store)->load("bosa"))->document == kDoc);  // a save repairs the record
}

TEST_CASE("schema record codec") {
  const StoredSchemas in{"{\"a\":1}", -1};
  const std::string rec = encodeSchemaRecord(in);
  CHECK(rec.size() == 9 + in.document.size());
  auto out = decodeSchemaRecord("bosa", rec);
  REQUIRE(out.ok());
  CHECK(out->document == in.document);
  CHECK(out->fetched_unix_ms == -1);
  for (size_t n = 0; n < 9; ++n) CHECK_FALSE(decodeSchemaRecord("bosa", rec.substr(0, n)).ok());
  CHECK(decodeSchemaRecord("bosa", rec.substr(0, 9)).ok());  // empty document
}

TEST_CASE("memory schema store: simulated storage failure") {
  MemorySchemaStore store;
  REQUIRE(store.save("bosa", {kDoc, 1}).ok());
  store.setFailing(true);
  CHECK(store.load("bosa").error().code == ErrorCode::kUnavailable);
  CHECK(store.save("bosa", {"{}", 2}).error().code == ErrorCode::kUnavailable);
  store.setFailing(false);
  CHECK((*store.load("bosa"))->document == kDoc);
}

}  // namespace
}  // namespace keyway::storage
