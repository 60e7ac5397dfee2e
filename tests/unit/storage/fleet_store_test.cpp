// The fleet store beyond the contract suite (credential_store_test.cpp runs that against it):
// concurrent writers, lost answers, what etcd holds, tampering, a host's replica and the import.
#include <doctest/doctest.h>

#include "core/clock.hpp"
#include "storage/fleet_replica.hpp"
#include "storage/fleet_store.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/master_key.hpp"
#include "tests/unit/storage/fake_fleet_kv.hpp"
#include "tests/unit/storage/test_util.hpp"

namespace keyway::storage {
namespace {

using core::ErrorCode;
using keyway::testing::contains;
using keyway::testing::FakeFleetKv;
using keyway::testing::TempDir;

constexpr const char* kPrefix = "/keyway/";

core::SecretString secret(const std::string& v) { return core::SecretString(v); }

struct Fleet {
  TempDir dir;
  std::shared_ptr<FakeFleetKv> kv = std::make_shared<FakeFleetKv>();
  Fleet() { REQUIRE(createMasterKeyFile(dir / "master.key").ok()); }
  std::unique_ptr<core::CredentialStore> store(const std::string& key = "master.key") {
    auto s = openFleetCredentialStore(kv, kPrefix, dir / key);
    REQUIRE(s.ok());
    return std::move(s).value();
  }
  bool anywhere(const std::string& needle) {
    for (const auto& [k, v] : kv->dump()) {
      if (contains(k, needle) || contains(v, needle)) return true;
    }
    return false;
  }
};

// Commits, then answers as if the connection broke before the answer came.
class LosingAnswers final : public FleetKv {
 public:
  explicit LosingAnswers(std::shared_ptr<FakeFleetKv> kv) : kv_(std::move(kv)) {}
  core::Result<FleetRange> range(const std::string& prefix) override { return kv_->range(prefix); }
  core::Result<bool> commit(const std::vector<FleetGuard>& guards, const std::vector<FleetWrite>& writes) override {
    auto r = kv_->commit(guards, writes);
    if (!r) return r;
    return core::Error::make(ErrorCode::kUnavailable, "etcd is unreachable (the answer was lost)");
  }

 private:
  std::shared_ptr<FakeFleetKv> kv_;
};

}  // namespace

TEST_CASE("fleet: a writer that lost the race runs its command again on the other's change") {
  Fleet f;
  auto a = f.store();
  auto b = f.store();
  REQUIRE(a->addTeam({"ops", true, {}, 0}).ok());
  // b commits between a's read and a's commit: a's guard fails, a runs again and keeps both.
  f.kv->before_commit = [&] { REQUIRE(b->setSecret("from-b", "", secret("vb")).ok()); };
  REQUIRE(a->setSecret("from-a", "", secret("va")).ok());
  CHECK(f.kv->conflicts == 1);
  auto listed = a->listSecrets();
  REQUIRE(listed.ok());
  CHECK(listed->size() == 2);
  // The rules see the other's change: the same team added meanwhile is a duplicate, not merged.
  f.kv->before_commit = [&] { REQUIRE(b->addTeam({"dev", true, {}, 0}).ok()); };
  auto dup = a->addTeam({"dev", false, {"bosa"}, 0});
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.error().code == ErrorCode::kBadRequest);
  CHECK(contains(dup.error().message, "already exists"));
  CHECK((*a->findTeam("dev"))->all_upstreams);  // b's version stays
}

TEST_CASE("fleet: a commit whose answer was lost is recognised by its head, not made twice") {
  Fleet f;
  auto plain = f.store();
  REQUIRE(plain->addTeam({"ops", true, {}, 0}).ok());
  auto losing = openFleetCredentialStore(std::make_shared<LosingAnswers>(f.kv), kPrefix, f.dir / "master.key");
  REQUIRE(losing.ok());
  auto token = (*losing)->addClient("app", "ops");
  REQUIRE(token.ok());  // made once, and said so
  CHECK((*plain->findClientByToken(token->view()))->name == "app");
  CHECK(f.kv->commits == 2);
}

TEST_CASE("fleet: etcd down fails the command with kUnavailable and writes nothing") {
  Fleet f;
  auto s = f.store();
  REQUIRE(s->addTeam({"ops", true, {}, 0}).ok());
  const int64_t before = f.kv->revision();
  f.kv->down = true;
  auto st = s->setSecret("k", "", secret("v"));
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kUnavailable);
  CHECK(contains(st.error().message, "etcd is unreachable"));
  f.kv->down = false;
  CHECK(f.kv->revision() == before);
  CHECK(s->listSecrets()->empty());
}

TEST_CASE("fleet: nothing in etcd is readable without the master key") {
  Fleet f;
  auto s = f.store();
  REQUIRE(s->addTeam({"team-zebra", true, {}, 0}).ok());
  auto token = s->addClient("client-okapi", "team-zebra");
  REQUIRE(token.ok());
  REQUIRE(s->setSecret("secret-name-lynx", "team-zebra", secret("value-of-the-secret-123")).ok());
  REQUIRE(s->addBosaUser("alice@example.org", secret("user-secret-456"), {"team-zebra"}).ok());
  for (const std::string& needle : {std::string(token->view()), std::string("value-of-the-secret-123"),
                                   std::string("user-secret-456"), std::string("team-zebra"),
                                   std::string("client-okapi"), std::string("secret-name-lynx"),
                                   std::string("alice@example.org")}) {
    CHECK_MESSAGE(!f.anywhere(needle), needle);
  }
  // Positive control: the scan finds what is there.
  f.kv->set("/keyway/planted", "planted-plaintext-789");
  CHECK(f.anywhere("planted-plaintext-789"));
}

TEST_CASE("fleet: a record changed or moved in etcd does not open; another master key is refused") {
  Fleet f;
  auto s = f.store();
  REQUIRE(s->addTeam({"ops", true, {}, 0}).ok());
  REQUIRE(s->setSecret("a", "", secret("va")).ok());
  REQUIRE(s->setSecret("b", "", secret("vb")).ok());
  std::vector<std::pair<std::string, std::string>> secrets;
  for (const auto& [k, v] : f.kv->dump()) {
    if (contains(k, "/r/secrets/")) secrets.emplace_back(k, v);
  }
  REQUIRE(secrets.size() == 2);
  SUBCASE("a flipped byte") {
    std::string bad = secrets[0].second;
    bad[bad.size() / 2] ^= 1;
    f.kv->set(secrets[0].first, bad);
  }
  SUBCASE("a value copied under another record's key") { f.kv->set(secrets[0].first, secrets[1].second); }
  auto listed = s->listSecrets();
  REQUIRE_FALSE(listed.ok());
  CHECK(listed.error().code == ErrorCode::kInternal);
  CHECK(contains(listed.error().message, "does not open"));

  REQUIRE(createMasterKeyFile(f.dir / "other.key").ok());
  auto other = f.store("other.key");
  auto refused = other->listTeams();
  REQUIRE_FALSE(refused.ok());
  CHECK(contains(refused.error().message, "sealed under master key id"));
}

TEST_CASE("fleet replica: a snapshot, then events in order, into the host's LMDB store") {
  Fleet f;
  auto admin = f.store();
  REQUIRE(admin->addTeam({"ops", true, {}, 0}).ok());
  auto token = admin->addClient("app", "ops");
  REQUIRE(token.ok());
  REQUIRE(admin->setSecret("k", "", secret("v1")).ok());
  REQUIRE(admin->addBosaUser("alice", secret("sk"), {"ops"}).ok());

  auto host = openLmdbCredentialStore(f.dir / "state", f.dir / "master.key");
  REQUIRE(host.ok());
  auto replica = openFleetReplica(f.dir / "state", f.dir / "master.key", kPrefix);
  REQUIRE(replica.ok());
  CHECK_FALSE((*replica)->state()->revision.has_value());
  auto range = f.kv->range(kPrefix);
  REQUIRE(range.ok());
  auto loaded = (*replica)->applySnapshot(*range);
  REQUIRE(loaded.ok());
  CHECK(*loaded == 5);  // team, client, its token, secret, user
  CHECK(*(*replica)->state()->revision == range->revision);
  CHECK((*(*host)->findClientByToken(token->view()))->name == "app");
  CHECK((*(*host)->resolveSecret("k", "ops"))->value.view() == "v1");
  REQUIRE((*host)->storeUserToken("alice", {secret("jwt"), 1'900'000'000}).ok());  // this host's own

  // A new user secret: the token this host minted with the old one goes.
  size_t from = f.kv->log.size();
  REQUIRE(admin->setBosaUserSecret("alice", secret("sk-new")).ok());
  REQUIRE((*replica)->applyEvents({f.kv->log.begin() + static_cast<std::ptrdiff_t>(from), f.kv->log.end()},
                                  f.kv->revision())
              .ok());
  CHECK_FALSE((*(*host)->findUserToken("alice")).has_value());
  CHECK((*(*host)->bosaUserSecret("alice"))->view() == "sk-new");
  REQUIRE((*host)->storeUserToken("alice", {secret("jwt-2"), 1'900'000'000}).ok());

  from = f.kv->log.size();
  REQUIRE(admin->revokeClient("app").ok());
  REQUIRE(admin->removeSecret("k", "").ok());
  REQUIRE(admin->removeBosaUser("alice").ok());
  std::vector<FleetEvent> events(f.kv->log.begin() + static_cast<std::ptrdiff_t>(from), f.kv->log.end());
  REQUIRE((*replica)->applyEvents(events, f.kv->revision()).ok());
  CHECK((*(*host)->findClientByToken(token->view()))->revoked);
  CHECK_FALSE((*(*host)->resolveSecret("k", "ops")).has_value());
  CHECK_FALSE((*(*host)->findBosaUser("alice")).has_value());
  CHECK_FALSE((*(*host)->findUserToken("alice")).has_value());  // went with its user
  CHECK(*(*replica)->state()->revision == f.kv->revision());
  // Replayed events (a resumed watch) change nothing; a meta change asks for a snapshot.
  REQUIRE((*replica)->applyEvents(events, f.kv->revision()).ok());
  auto meta = (*replica)->applyEvents({{"/keyway/meta/key_id", std::string("x"), f.kv->revision() + 1}},
                                      f.kv->revision() + 1);
  REQUIRE_FALSE(meta.ok());
  CHECK(meta.error().code == ErrorCode::kBadRequest);
}

TEST_CASE("fleet replica: a snapshot with a damaged record changes nothing") {
  Fleet f;
  auto admin = f.store();
  REQUIRE(admin->addTeam({"ops", true, {}, 0}).ok());
  auto host = openLmdbCredentialStore(f.dir / "state", f.dir / "master.key");
  REQUIRE(host.ok());
  REQUIRE((*host)->addTeam({"local", true, {}, 0}).ok());
  for (const auto& [k, v] : f.kv->dump()) {
    if (contains(k, "/r/teams/")) f.kv->set(k, v.substr(0, v.size() - 1));
  }
  auto replica = openFleetReplica(f.dir / "state", f.dir / "master.key", kPrefix);
  REQUIRE(replica.ok());
  auto applied = (*replica)->applySnapshot(*f.kv->range(kPrefix));
  REQUIRE_FALSE(applied.ok());
  CHECK(contains(applied.error().message, "does not open"));
  CHECK((*(*host)->findTeam("local")).has_value());
}

TEST_CASE("fleet import: a single host's store, once, into an empty prefix; its tokens work") {
  Fleet f;
  auto local = openLmdbCredentialStore(f.dir / "state", f.dir / "master.key");
  REQUIRE(local.ok());
  REQUIRE((*local)->addTeam({"ops", true, {}, 0}).ok());
  auto token = (*local)->addClient("app", "ops");
  REQUIRE(token.ok());
  // More records than one etcd transaction carries.
  for (int i = 0; i < 150; ++i) {
    REQUIRE((*local)->setSecret("s" + std::to_string(i), "ops", secret("v" + std::to_string(i))).ok());
  }
  auto report = importIntoFleet(*f.kv, kPrefix, f.dir / "state", f.dir / "master.key");
  REQUIRE(report.ok());
  CHECK(report->records == 153);
  CHECK(report->counts.secrets == 150);
  CHECK(f.kv->commits >= 2);
  CHECK(f.kv->log.back().key == "/keyway/head");  // hosts load the store only once it is whole
  auto fleet = f.store();
  CHECK((*fleet->findClientByToken(token->view()))->name == "app");
  CHECK((*fleet->resolveSecret("s149", "ops"))->value.view() == "v149");
  auto again = importIntoFleet(*f.kv, kPrefix, f.dir / "state", f.dir / "master.key");
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == ErrorCode::kBadRequest);
  CHECK(contains(again.error().message, "not empty"));
}

}  // namespace keyway::storage
