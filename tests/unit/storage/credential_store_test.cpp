// Tests of the credential store: record codec, every CredentialStore operation against both
// the LMDB store (openLmdbCredentialStore) and MemoryCredentialStore, and the LMDB specifics
// (multi-process visibility, fail-closed master key, tamper detection, nothing in plaintext on
// disk, modes, map resize / reader table / map full handling).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "core/clock.hpp"
#include "storage/crypto.hpp"
#include "storage/file_util.hpp"
#include "storage/fleet_store.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/master_key.hpp"
#include "storage/memory_credential_store.hpp"
#include "storage/record_codec.hpp"
#include "tests/unit/storage/fake_fleet_kv.hpp"
#include "tests/unit/storage/test_util.hpp"

namespace keyway::storage {
namespace {

using core::ErrorCode;
using keyway::testing::contains;
using keyway::testing::fileMode;
using keyway::testing::listFiles;
using keyway::testing::runInChild;
using keyway::testing::readFile;
using keyway::testing::TempDir;
using keyway::testing::writeFile;

core::SecretString secret(std::string_view v) { return core::SecretString(v); }

// --- record codec ------------------------------------------------------------------------------

TEST_CASE("names: the allowed alphabet and length") {
  for (const char* good : {"a", "team-1", "A.b_c@d+e-f", "bundleup.api_key", "x-"}) {
    CHECK_MESSAGE(isValidName(good), good);
  }
  for (const std::string& bad : {std::string(""), std::string("-lead"), std::string("has space"),
                                 std::string("sl/ash"), std::string("nul\0x", 5),
                                 std::string("ünï"), std::string("a,b"), std::string(129, 'a')}) {
    CHECK_FALSE(isValidName(bad));
    auto status = validateName("team", bad);
    REQUIRE_FALSE(status.ok());
    CHECK(status.error().code == ErrorCode::kBadRequest);
    CHECK(contains(status.error().message, "invalid team name"));
  }
  CHECK(isValidName(std::string(128, 'a')));
}

TEST_CASE("codec: records round trip") {
  core::TeamRecord team{"ops", false, {"bosa", "bundleiq"}, 1700000001};
  auto t = decodeTeam("ops", encodeTeam(team));
  REQUIRE(t.ok());
  CHECK(t->name == "ops");
  CHECK_FALSE(t->all_upstreams);
  CHECK(t->upstreams == team.upstreams);
  CHECK(t->created_unix == 1700000001);

  StoredClient client{{"app1", "ops", true, -5}, std::string(32, 'h')};
  auto c = decodeClient("app1", encodeClient(client));
  REQUIRE(c.ok());
  CHECK(c->client.team == "ops");
  CHECK(c->client.revoked);
  CHECK(c->client.created_unix == -5);
  CHECK(c->token_hash == client.token_hash);
  // Never rotated: version 1, as written before rotation existed.
  CHECK(encodeClient(client)[1] == 1);

  StoredClient rotated = client;
  rotated.client.rotated_unix = 100;
  rotated.client.previous_token_until_unix = 160;
  rotated.previous_token_hash = std::string(32, 'p');
  const std::string v2 = encodeClient(rotated);
  CHECK(v2[1] == 2);
  auto r = decodeClient("app1", v2);
  REQUIRE(r.ok());
  CHECK(r->client.rotated_unix == 100);
  CHECK(r->client.previous_token_until_unix == 160);
  CHECK(r->previous_token_hash == rotated.previous_token_hash);
  rotated.previous_token_hash.clear();  // an end of grace without a token
  CHECK_FALSE(decodeClient("app1", encodeClient(rotated)).ok());
  rotated.client.previous_token_until_unix = 0;
  CHECK(decodeClient("app1", encodeClient(rotated)).ok());
  CHECK_FALSE(decodeClient("app1", v2 + "x").ok());

  auto ref = decodeClientTokenRef(std::string(32, 'h'), encodeClientTokenRef("app1"));
  REQUIRE(ref.ok());
  CHECK(*ref == "app1");

  const std::string key = secretKey("ops", "bosa.api_key");
  CHECK(key == std::string("ops\0bosa.api_key", 16));
  auto s = decodeSecret(key, encodeSecret(42, "sealed-bytes"));
  REQUIRE(s.ok());
  CHECK(s->team == "ops");
  CHECK(s->name == "bosa.api_key");
  CHECK(s->updated_unix == 42);
  CHECK(s->sealed == "sealed-bytes");
  auto shared = decodeSecretKey(secretKey("", "x"));
  REQUIRE(shared.ok());
  CHECK(shared->first.empty());

  StoredBosaUser user{{"alice@example.com", {"ops", "dev"}, 7}, "sealed"};
  auto u = decodeBosaUser("alice@example.com", encodeBosaUser(user));
  REQUIRE(u.ok());
  CHECK(u->user.teams == user.user.teams);
  CHECK(u->sealed_secret == "sealed");

  auto ut = decodeUserToken("alice", encodeUserToken({99, "tok"}));
  REQUIRE(ut.ok());
  CHECK(ut->expires_unix == 99);

  auto v = decodeSchemaVersion(encodeSchemaVersion(kSchemaVersion));
  REQUIRE(v.ok());
  CHECK(*v == kSchemaVersion);
  auto kc = decodeKeyCheck(encodeKeyCheck("abc"));
  REQUIRE(kc.ok());
  CHECK(*kc == "abc");
}

TEST_CASE("codec: malformed records are rejected, never crash") {
  struct Sample {
    std::string_view table;
    std::string key;
    std::string value;
  };
  const std::vector<Sample> samples = {
      {table::kTeams, "ops", encodeTeam({"ops", false, {"bosa"}, 1})},
      {table::kClients, "app", encodeClient({{"app", "ops", false, 1}, std::string(32, 'h')})},
      {table::kClientTokens, std::string(32, 'h'), encodeClientTokenRef("app")},
      {table::kSecrets, secretKey("", "n"), encodeSecret(1, "sealed")},
      {table::kBosaUsers, "alice", encodeBosaUser({{"alice", {"ops"}, 1}, "sealed"})},
      {table::kUserTokens, "alice", encodeUserToken({1, "sealed"})},
      {table::kMeta, std::string(kMetaSchemaVersion), encodeSchemaVersion(1)},
      {table::kMeta, std::string(kMetaKeyCheck), encodeKeyCheck("sealed")},
  };
  for (const auto& s : samples) {
    REQUIRE_MESSAGE(decodeRecord(s.table, s.key, s.value).ok(), s.table);
    for (size_t n = 0; n < s.value.size(); ++n) {
      CHECK_FALSE_MESSAGE(decodeRecord(s.table, s.key, s.value.substr(0, n)).ok(), s.table);
    }
    CHECK_FALSE(decodeRecord(s.table, s.key, s.value + "x").ok());  // trailing bytes
    std::string bad_tag = s.value;
    bad_tag[0] = '?';
    CHECK_FALSE(decodeRecord(s.table, s.key, bad_tag).ok());
    std::string bad_version = s.value;
    bad_version[1] = 9;
    CHECK_FALSE(decodeRecord(s.table, s.key, bad_version).ok());
  }
  // Keys are validated too.
  CHECK_FALSE(decodeRecord(table::kTeams, "bad name", encodeTeam({"x", true, {}, 1})).ok());
  CHECK_FALSE(decodeRecord(table::kSecrets, "no-separator", encodeSecret(1, "s")).ok());
  CHECK_FALSE(decodeRecord(table::kClientTokens, "short", encodeClientTokenRef("app")).ok());
  CHECK_FALSE(decodeRecord(table::kMeta, "other", encodeSchemaVersion(1)).ok());
  auto unknown = decodeRecord("nope", "k", "v");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().code == ErrorCode::kBadRequest);
  // A list count far beyond the input must not allocate or read out of bounds.
  std::string huge = "T\x01";
  huge += std::string(8, '\0');
  huge += '\0';
  huge += "\xff\xff\xff\x7f";
  CHECK_FALSE(decodeTeam("ops", huge).ok());
  std::string long_str = "H\x01\xff\xff\xff\xff" "abc";
  CHECK_FALSE(decodeClientTokenRef(std::string(32, 'h'), long_str).ok());
  // A boolean byte other than 0/1, and invalid names inside lists.
  std::string bad_bool = encodeTeam({"ops", true, {}, 1});
  bad_bool[10] = 2;
  CHECK_FALSE(decodeTeam("ops", bad_bool).ok());
  CHECK_FALSE(decodeTeam("ops", encodeTeam({"ops", false, {"a b"}, 1})).ok());
  CHECK_FALSE(decodeTeam("ops", encodeTeam({"ops", false, {"a", "a"}, 1})).ok());
  CHECK_FALSE(decodeClient("app", encodeClient({{"app", "ops", false, 1}, "short"})).ok());
  // Deterministic pseudo-random garbage for every table.
  uint32_t x = 12345;
  for (int i = 0; i < 3000; ++i) {
    std::string junk;
    const size_t len = (x >> 3) % 64;
    for (size_t j = 0; j < len; ++j) {
      x = x * 1103515245u + 12345u;
      junk.push_back(static_cast<char>(x >> 16));
    }
    if (junk.size() > 1 && i % 2 == 0) junk[1] = 1;  // get past the version byte sometimes
    for (const auto& s : samples) {
      if (!junk.empty()) junk[0] = s.value[0];
      (void)decodeRecord(s.table, s.key, junk);
    }
  }
}

// --- both implementations ----------------------------------------------------------------------

struct LmdbFixture {
  TempDir dir;
  std::shared_ptr<core::ManualClock> clock = std::make_shared<core::ManualClock>();
  std::unique_ptr<core::CredentialStore> store;
  LmdbFixture() {
    REQUIRE(createMasterKeyFile(dir / "master.key").ok());
    auto s = openLmdbCredentialStore(dir / "state", dir / "master.key", clock);
    REQUIRE(s.ok());
    store = std::move(s).value();
  }
};

struct MemoryFixture {
  std::shared_ptr<core::ManualClock> clock = std::make_shared<core::ManualClock>();
  std::unique_ptr<core::CredentialStore> store = std::make_unique<MemoryCredentialStore>(clock);
};

// The fleet's store (etcd, here a stand-in) holds the same records under the same rules. Minted
// user tokens stay on the host that minted them, so the fleet has none to give back.
struct FleetFixture {
  TempDir dir;
  std::shared_ptr<core::ManualClock> clock = std::make_shared<core::ManualClock>();
  std::shared_ptr<keyway::testing::FakeFleetKv> kv = std::make_shared<keyway::testing::FakeFleetKv>();
  std::unique_ptr<core::CredentialStore> store;
  FleetFixture() {
    REQUIRE(createMasterKeyFile(dir / "master.key").ok());
    auto s = openFleetCredentialStore(kv, "/keyway/", dir / "master.key", clock);
    REQUIRE(s.ok());
    store = std::move(s).value();
  }
};

template <class F>
constexpr bool keepsUserTokens() {
  if constexpr (std::is_same_v<F, FleetFixture>) {
    return false;
  } else {
    return true;
  }
}

#define STORE_TEST(name) TEST_CASE_TEMPLATE(name, F, LmdbFixture, MemoryFixture, FleetFixture)

template <class R>  // core::Status or any core::Result
void expectBadRequest(const R& status, std::string_view fragment) {
  REQUIRE_FALSE(status.ok());
  CHECK(status.error().code == ErrorCode::kBadRequest);
  CHECK_MESSAGE(contains(status.error().message, fragment), status.error().message);
}

STORE_TEST("store: teams") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  f.clock->advance(std::chrono::seconds(10));
  REQUIRE(s.addTeam({"dev", false, {"bosa", "bundleiq", "bosa"}, 0}).ok());
  expectBadRequest(s.addTeam({"ops", true, {}, 0}), "already exists");
  expectBadRequest(s.addTeam({"-x", true, {}, 0}), "invalid team name");
  expectBadRequest(s.addTeam({"", true, {}, 0}), "invalid team name");
  expectBadRequest(s.addTeam({"x", false, {}, 0}), "at least one upstream");
  expectBadRequest(s.addTeam({"x", false, {"bad upstream"}, 0}), "invalid upstream name");

  auto ops = s.findTeam("ops");
  REQUIRE(ops.ok());
  REQUIRE(ops->has_value());
  CHECK((*ops)->all_upstreams);
  CHECK((*ops)->created_unix == 1'700'000'000);
  auto dev = s.findTeam("dev");
  REQUIRE(dev.ok());
  REQUIRE(dev->has_value());
  CHECK_FALSE((*dev)->all_upstreams);
  CHECK((*dev)->upstreams == std::vector<std::string>{"bosa", "bundleiq"});
  CHECK((*dev)->created_unix == 1'700'000'010);
  auto none = s.findTeam("nope");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  auto invalid = s.findTeam("not valid");
  REQUIRE(invalid.ok());
  CHECK_FALSE(invalid->has_value());

  auto list = s.listTeams();
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK((*list)[0].name == "dev");  // sorted by name
  CHECK((*list)[1].name == "ops");

  expectBadRequest(s.removeTeam("nope", false), "unknown team");
  REQUIRE(s.removeTeam("dev", false).ok());
  CHECK_FALSE(s.findTeam("dev")->has_value());
  CHECK(s.listTeams()->size() == 1);
}

STORE_TEST("store: clients and tokens") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  auto unknown_team = s.addClient("app", "nope");
  REQUIRE_FALSE(unknown_team.ok());
  CHECK(unknown_team.error().code == ErrorCode::kBadRequest);
  CHECK(contains(unknown_team.error().message, "unknown team 'nope'"));
  CHECK_FALSE(s.addClient("bad name", "ops").ok());

  auto token = s.addClient("app", "ops");
  REQUIRE(token.ok());
  CHECK(isWellFormedClientToken(token->view()));
  auto found = s.findClientByToken(token->view());
  REQUIRE(found.ok());
  REQUIRE(found->has_value());
  CHECK((*found)->name == "app");
  CHECK((*found)->team == "ops");
  CHECK_FALSE((*found)->revoked);
  CHECK((*found)->created_unix == 1'700'000'000);

  auto dup = s.addClient("app", "ops");
  REQUIRE_FALSE(dup.ok());
  CHECK(contains(dup.error().message, "already exists"));

  for (std::string bad : {std::string(""), std::string("kw_"), std::string("Bearer x"),
                          std::string(generateClientToken().view()), std::string(5000, 'k')}) {
    auto r = s.findClientByToken(bad);
    REQUIRE(r.ok());
    CHECK_FALSE(r->has_value());
  }
  std::string altered(token->view());
  altered.back() = altered.back() == 'A' ? 'B' : 'A';
  CHECK_FALSE(s.findClientByToken(altered)->has_value());

  auto token2 = s.addClient("app2", "ops");
  REQUIRE(token2.ok());
  CHECK(token2->view() != token->view());
  auto clients = s.listClients();
  REQUIRE(clients.ok());
  REQUIRE(clients->size() == 2);
  CHECK((*clients)[0].name == "app");
  CHECK((*clients)[1].name == "app2");

  expectBadRequest(s.revokeClient("ghost"), "unknown client");
  REQUIRE(s.revokeClient("app").ok());
  REQUIRE(s.revokeClient("app").ok());  // idempotent
  auto revoked = s.findClientByToken(token->view());
  REQUIRE(revoked.ok());
  REQUIRE(revoked->has_value());
  CHECK((*revoked)->revoked);
  CHECK((*s.listClients())[0].revoked);

  // Re-creating a revoked client's name issues a new token; the old one stays dead.
  auto token3 = s.addClient("app", "ops");
  REQUIRE(token3.ok());
  CHECK_FALSE(s.findClientByToken(token->view())->has_value());
  auto again = s.findClientByToken(token3->view());
  REQUIRE(again->has_value());
  CHECK_FALSE((*again)->revoked);
}

STORE_TEST("store: secrets, team override, scopes") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  REQUIRE(s.addTeam({"dev", true, {}, 0}).ok());
  REQUIRE(s.setSecret("bosa.api_key", "", secret("shared-value")).ok());
  f.clock->advance(std::chrono::seconds(5));
  REQUIRE(s.setSecret("bosa.api_key", "ops", secret("ops-value")).ok());
  expectBadRequest(s.setSecret("bosa.api_key", "nope", secret("v")), "unknown team");
  expectBadRequest(s.setSecret("bad name", "", secret("v")), "invalid secret name");
  expectBadRequest(s.setSecret("x", "", secret("")), "empty");

  auto ops = s.resolveSecret("bosa.api_key", "ops");
  REQUIRE(ops.ok());
  REQUIRE(ops->has_value());
  CHECK((*ops)->value.view() == "ops-value");
  CHECK((*ops)->scope == "team:ops");
  CHECK((*ops)->name == "bosa.api_key");
  auto dev = s.resolveSecret("bosa.api_key", "dev");
  REQUIRE(dev->has_value());
  CHECK((*dev)->value.view() == "shared-value");
  CHECK((*dev)->scope == "shared");
  auto no_team = s.resolveSecret("bosa.api_key", "");
  REQUIRE(no_team->has_value());
  CHECK((*no_team)->scope == "shared");
  CHECK_FALSE(s.resolveSecret("missing", "ops")->has_value());
  CHECK_FALSE(s.resolveSecret("bad name", "ops")->has_value());

  auto list = s.listSecrets();
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK((*list)[0].team.empty());
  CHECK((*list)[0].updated_unix == 1'700'000'000);
  CHECK((*list)[1].team == "ops");
  CHECK((*list)[1].updated_unix == 1'700'000'005);

  f.clock->advance(std::chrono::seconds(5));
  REQUIRE(s.setSecret("bosa.api_key", "", secret("rotated")).ok());
  CHECK((*s.resolveSecret("bosa.api_key", "dev"))->value.view() == "rotated");
  CHECK((*s.listSecrets())[0].updated_unix == 1'700'000'010);

  expectBadRequest(s.removeSecret("bosa.api_key", "dev"), "for team 'dev'");
  expectBadRequest(s.removeSecret("nope", ""), "(shared)");
  REQUIRE(s.removeSecret("bosa.api_key", "ops").ok());
  CHECK((*s.resolveSecret("bosa.api_key", "ops"))->scope == "shared");
  REQUIRE(s.removeSecret("bosa.api_key", "").ok());
  CHECK_FALSE(s.resolveSecret("bosa.api_key", "ops")->has_value());
  CHECK(s.listSecrets()->empty());
}

STORE_TEST("store: BOSA users, grants and user tokens") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  REQUIRE(s.addTeam({"dev", true, {}, 0}).ok());
  expectBadRequest(s.addBosaUser("alice", secret("sk-user-a"), {"nope"}), "unknown team");
  expectBadRequest(s.addBosaUser("alice", secret(""), {"ops"}), "empty");
  expectBadRequest(s.addBosaUser("bad id", secret("sk"), {"ops"}), "invalid BOSA user name");
  REQUIRE(s.addBosaUser("alice", secret("sk-user-a"), {"ops", "ops"}).ok());
  expectBadRequest(s.addBosaUser("alice", secret("sk-user-b"), {"ops"}), "already exists");

  auto alice = s.findBosaUser("alice");
  REQUIRE(alice.ok());
  REQUIRE(alice->has_value());
  CHECK((*alice)->teams == std::vector<std::string>{"ops"});
  CHECK((*alice)->created_unix == 1'700'000'000);
  auto sk = s.bosaUserSecret("alice");
  REQUIRE(sk.ok());
  REQUIRE(sk->has_value());
  CHECK((*sk)->view() == "sk-user-a");
  CHECK_FALSE(s.findBosaUser("bob")->has_value());
  CHECK_FALSE(s.bosaUserSecret("bob")->has_value());

  using Teams = std::vector<std::string>;
  expectBadRequest(s.grantBosaUser("bob", {"ops"}), "unknown BOSA user");
  expectBadRequest(s.grantBosaUser("alice", {"nope"}), "unknown team");
  auto granted = s.grantBosaUser("alice", {"dev"});
  REQUIRE(granted.ok());
  CHECK(*granted == Teams{"dev"});
  granted = s.grantBosaUser("alice", {"dev"});  // idempotent: nothing changed, no error
  REQUIRE(granted.ok());
  CHECK(granted->empty());
  CHECK((*s.findBosaUser("alice"))->teams == Teams{"ops", "dev"});
  auto revoked = s.revokeBosaUser("alice", {"ops"});
  REQUIRE(revoked.ok());
  CHECK(*revoked == Teams{"ops"});
  revoked = s.revokeBosaUser("alice", {"ops"});  // idempotent, as granting twice
  REQUIRE(revoked.ok());
  CHECK(revoked->empty());
  expectBadRequest(s.revokeBosaUser("bob", {"ops"}), "unknown BOSA user");
  expectBadRequest(s.revokeBosaUser("alice", {"nope"}), "unknown team");
  CHECK((*s.findBosaUser("alice"))->teams == Teams{"dev"});

  expectBadRequest(s.storeUserToken("bob", {secret("jwt"), 5}), "unknown BOSA user");
  CHECK_FALSE(s.findUserToken("alice")->has_value());
  REQUIRE(s.storeUserToken("alice", {secret("eyJ.jwt.1"), 1'700'003'600}).ok());
  if constexpr (keepsUserTokens<F>()) {
    auto tok = s.findUserToken("alice");
    REQUIRE(tok.ok());
    REQUIRE(tok->has_value());
    CHECK((*tok)->token.view() == "eyJ.jwt.1");
    CHECK((*tok)->expires_unix == 1'700'003'600);
    REQUIRE(s.storeUserToken("alice", {secret("eyJ.jwt.2"), 1'700'007'200}).ok());
    CHECK((*s.findUserToken("alice"))->token.view() == "eyJ.jwt.2");
  } else {
    CHECK_FALSE(s.findUserToken("alice")->has_value());  // kept by the host that minted it
  }

  REQUIRE(s.addBosaUser("bob@x.io", secret("sk-user-b"), {}).ok());
  auto users = s.listBosaUsers();
  REQUIRE(users.ok());
  REQUIRE(users->size() == 2);
  CHECK((*users)[0].identifier == "alice");
  CHECK((*users)[1].identifier == "bob@x.io");

  expectBadRequest(s.removeBosaUser("carol"), "unknown BOSA user");
  REQUIRE(s.removeBosaUser("alice").ok());
  CHECK_FALSE(s.findBosaUser("alice")->has_value());
  CHECK_FALSE(s.findUserToken("alice")->has_value());
  // A new user with the same identifier starts without the old token.
  REQUIRE(s.addBosaUser("alice", secret("sk-user-new"), {"dev"}).ok());
  CHECK_FALSE(s.findUserToken("alice")->has_value());
  CHECK((*s.bosaUserSecret("alice"))->view() == "sk-user-new");
}

STORE_TEST("store: removing a team needs its clients revoked and takes its data along") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  REQUIRE(s.addTeam({"dev", true, {}, 0}).ok());
  auto token = s.addClient("app", "ops");
  REQUIRE(token.ok());
  REQUIRE(s.addClient("other", "dev").ok());
  REQUIRE(s.setSecret("k", "ops", secret("ops-only")).ok());
  REQUIRE(s.setSecret("k", "dev", secret("dev-only")).ok());
  REQUIRE(s.addBosaUser("alice", secret("sk-user-a"), {"ops", "dev"}).ok());

  expectBadRequest(s.removeTeam("ops", true), "'app'");
  CHECK(s.findTeam("ops")->has_value());
  REQUIRE(s.revokeClient("app").ok());
  // Its own secret and a user grant would go with it: only when asked for, and named.
  auto refused = s.removeTeam("ops", false);
  expectBadRequest(refused, "secret(s) k");
  expectBadRequest(refused, "BOSA user(s) alice");
  expectBadRequest(refused, "--force");
  CHECK(s.findTeam("ops")->has_value());
  CHECK(s.resolveSecret("k", "ops")->has_value());
  auto removed = s.removeTeam("ops", true);
  REQUIRE(removed.ok());
  CHECK(removed->secrets == std::vector<std::string>{"k"});
  CHECK(removed->bosa_users == std::vector<std::string>{"alice"});
  CHECK(removed->revoked_clients == std::vector<std::string>{"app"});

  CHECK_FALSE(s.findTeam("ops")->has_value());
  CHECK_FALSE(s.findClientByToken(token->view())->has_value());
  auto clients = s.listClients();
  REQUIRE(clients->size() == 1);
  CHECK((*clients)[0].name == "other");
  CHECK((*s.findBosaUser("alice"))->teams == std::vector<std::string>{"dev"});
  // A new team with the old name inherits nothing.
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  CHECK_FALSE(s.resolveSecret("k", "ops")->has_value());
  CHECK((*s.resolveSecret("k", "dev"))->value.view() == "dev-only");
}

STORE_TEST("store: rotating a client's token; the old one for a grace period only") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  auto first = s.addClient("app", "ops");
  REQUIRE(first.ok());
  const std::string t1(first->view());
  CHECK((*s.findClientByToken(t1))->rotated_unix == 0);

  expectBadRequest(s.rotateClient("ghost", 0), "unknown client");
  expectBadRequest(s.rotateClient("app", -1), "grace period");
  expectBadRequest(s.rotateClient("app", core::kMaxRotationGraceSeconds + 1), "grace period");

  // With a grace period both work; the old one says when it ends.
  f.clock->advance(std::chrono::seconds(5));
  auto second = s.rotateClient("app", 60);
  REQUIRE(second.ok());
  const std::string t2(second->view());
  CHECK(t2 != t1);
  auto by_new = s.findClientByToken(t2);
  REQUIRE(by_new->has_value());
  CHECK((*by_new)->name == "app");
  CHECK((*by_new)->team == "ops");
  CHECK((*by_new)->token_expires_unix == 0);
  CHECK((*by_new)->rotated_unix == 1'700'000'005);
  auto by_old = s.findClientByToken(t1);
  REQUIRE(by_old->has_value());
  CHECK((*by_old)->token_expires_unix == 1'700'000'065);
  CHECK((*s.listClients())[0].previous_token_until_unix == 1'700'000'065);
  f.clock->advance(std::chrono::seconds(59));
  CHECK(s.findClientByToken(t1)->has_value());
  f.clock->advance(std::chrono::seconds(1));
  CHECK_FALSE(s.findClientByToken(t1)->has_value());  // the grace period is over
  CHECK(s.findClientByToken(t2)->has_value());

  // A second rotation ends the first hand-over at once; without grace the old token stops too.
  auto third = s.rotateClient("app", 3600);
  REQUIRE(third.ok());
  auto fourth = s.rotateClient("app", 0);
  REQUIRE(fourth.ok());
  CHECK_FALSE(s.findClientByToken(t1)->has_value());
  CHECK_FALSE(s.findClientByToken(t2)->has_value());
  CHECK_FALSE(s.findClientByToken(third->view())->has_value());
  CHECK(s.findClientByToken(fourth->view())->has_value());

  // A revoked client gets no new token; revoking covers a token in its grace period.
  auto fifth = s.rotateClient("app", 3600);
  REQUIRE(fifth.ok());
  REQUIRE(s.revokeClient("app").ok());
  CHECK((*s.findClientByToken(fourth->view()))->revoked);
  CHECK((*s.findClientByToken(fifth->view()))->revoked);
  expectBadRequest(s.rotateClient("app", 0), "revoked");
}

STORE_TEST("store: removing a client forgets every token it had") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  auto t1 = s.addClient("app", "ops");
  REQUIRE(t1.ok());
  auto t2 = s.rotateClient("app", 3600);
  REQUIRE(t2.ok());
  expectBadRequest(s.removeClient("ghost", false), "unknown client");
  expectBadRequest(s.removeClient("app", false), "--force");  // active: only when forced
  CHECK(s.findClientByToken(t2->view())->has_value());
  REQUIRE(s.removeClient("app", true).ok());
  CHECK_FALSE(s.findClientByToken(t1->view())->has_value());
  CHECK_FALSE(s.findClientByToken(t2->view())->has_value());
  CHECK(s.listClients()->empty());
  // A revoked client goes without --force; a new client of that name gets none of the old tokens.
  auto t3 = s.addClient("app", "ops");
  REQUIRE(t3.ok());
  REQUIRE(s.revokeClient("app").ok());
  REQUIRE(s.removeClient("app", false).ok());
  auto t4 = s.addClient("app", "ops");
  REQUIRE(t4.ok());
  CHECK_FALSE(s.findClientByToken(t3->view())->has_value());
  CHECK(s.findClientByToken(t4->view())->has_value());
}

STORE_TEST("store: a team's upstreams change in place; its clients and data stay") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", false, {"bosa"}, 0}).ok());
  auto token = s.addClient("app", "ops");
  REQUIRE(token.ok());
  REQUIRE(s.setSecret("k", "ops", secret("v")).ok());
  f.clock->advance(std::chrono::seconds(30));
  expectBadRequest(s.setTeamUpstreams({"nope", true, {}, 0}), "unknown team");
  expectBadRequest(s.setTeamUpstreams({"ops", false, {}, 0}), "at least one upstream");
  REQUIRE(s.setTeamUpstreams({"ops", false, {"bundleiq", "bosa", "bundleiq"}, 0}).ok());
  auto ops = s.findTeam("ops");
  CHECK((*ops)->upstreams == std::vector<std::string>{"bundleiq", "bosa"});
  CHECK((*ops)->created_unix == 1'700'000'000);  // kept
  const uint64_t g = s.generation();
  REQUIRE(s.setTeamUpstreams({"ops", false, {"bundleiq", "bosa"}, 0}).ok());
  CHECK(s.generation() == g);  // nothing changed, nothing written
  REQUIRE(s.setTeamUpstreams({"ops", true, {"ignored"}, 0}).ok());
  CHECK((*s.findTeam("ops"))->all_upstreams);
  CHECK((*s.findTeam("ops"))->upstreams.empty());
  CHECK(s.findClientByToken(token->view())->has_value());
  CHECK(s.resolveSecret("k", "ops")->has_value());
}

STORE_TEST("store: a BOSA user's secret changes, its grants stay, its minted token goes") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  REQUIRE(s.addBosaUser("alice", secret("sk-user-old"), {"ops"}).ok());
  REQUIRE(s.storeUserToken("alice", {secret("jwt-old"), 1'800'000'000}).ok());
  expectBadRequest(s.setBosaUserSecret("bob", secret("sk-user-x")), "unknown BOSA user");
  expectBadRequest(s.setBosaUserSecret("alice", secret("")), "empty");
  CHECK(s.findUserToken("alice")->has_value() == keepsUserTokens<F>());
  REQUIRE(s.setBosaUserSecret("alice", secret("sk-user-new")).ok());
  CHECK((*s.bosaUserSecret("alice"))->view() == "sk-user-new");
  CHECK((*s.findBosaUser("alice"))->teams == std::vector<std::string>{"ops"});
  CHECK_FALSE(s.findUserToken("alice")->has_value());
}

STORE_TEST("store: generation moves with every write, not with reads") {
  F f;
  auto& s = *f.store;
  const uint64_t g0 = s.generation();
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  const uint64_t g1 = s.generation();
  CHECK(g1 != g0);
  (void)s.listTeams();
  (void)s.findTeam("ops");
  (void)s.resolveSecret("x", "ops");
  CHECK(s.generation() == g1);
  REQUIRE(s.setSecret("x", "", secret("v")).ok());
  CHECK(s.generation() != g1);
  const uint64_t g2 = s.generation();
  CHECK_FALSE(s.addTeam({"ops", true, {}, 0}).ok());  // a refused write changes nothing
  CHECK(s.generation() == g2);
}

STORE_TEST("store: concurrent readers and writers") {
  F f;
  auto& s = *f.store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  auto token = s.addClient("app", "ops");
  REQUIRE(token.ok());
  const std::string tok(token->view());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        const std::string name = "s" + std::to_string(t) + "_" + std::to_string(i);
        if (!s.setSecret(name, "ops", core::SecretString(name + "-value")).ok()) ++failures;
        auto r = s.resolveSecret(name, "ops");
        if (!r.ok() || !r->has_value() || (*r)->value.view() != name + "-value") ++failures;
        auto c = s.findClientByToken(tok);
        if (!c.ok() || !c->has_value()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);
  CHECK(s.listSecrets()->size() == 160);
}

// --- LMDB specifics ----------------------------------------------------------------------------

TEST_CASE("lmdb: factory needs the master key and creates private files") {
  TempDir dir;
  const std::string state = dir / "state";
  auto missing = openLmdbCredentialStore(state, dir / "master.key");
  REQUIRE_FALSE(missing.ok());
  CHECK(contains(missing.error().message, "keywayctl init"));
  CHECK_FALSE(pathExists(state));  // nothing created without a key

  REQUIRE(createMasterKeyFile(dir / "master.key").ok());
  auto store = openLmdbCredentialStore(state, dir / "master.key");
  REQUIRE(store.ok());
  CHECK(fileMode(state) == 0700);
  CHECK(fileMode(credentialEnvPath(state)) == 0700);
  CHECK(fileMode(credentialEnvPath(state) + "/data.mdb") == 0600);
  CHECK(fileMode(credentialEnvPath(state) + "/lock.mdb") == 0600);
  CHECK(fileMode(dir / "master.key") == 0600);
}

TEST_CASE("lmdb: initStateDir is idempotent and reports what it created") {
  TempDir dir;
  auto first = initStateDir(dir / "state", dir / "state/master.key");
  REQUIRE(first.ok());
  CHECK(first->created_state_dir);
  CHECK(first->created_master_key);
  CHECK(first->created_store);
  CHECK(fileMode(dir / "state/master.key") == 0600);
  auto second = initStateDir(dir / "state", dir / "state/master.key");
  REQUIRE(second.ok());
  CHECK_FALSE(second->created_state_dir);
  CHECK_FALSE(second->created_master_key);
  CHECK_FALSE(second->created_store);
  // A different key for an initialised directory fails closed.
  REQUIRE(createMasterKeyFile(dir / "other.key").ok());
  auto wrong = initStateDir(dir / "state", dir / "other.key");
  REQUIRE_FALSE(wrong.ok());
  CHECK(contains(wrong.error().message, "master key does not match this state directory"));
  CHECK(contains(wrong.error().message, dir / "other.key"));
}

TEST_CASE("lmdb: a wrong master key fails closed") {
  TempDir dir;
  REQUIRE(createMasterKeyFile(dir / "good.key").ok());
  REQUIRE(createMasterKeyFile(dir / "bad.key").ok());
  {
    auto store = openLmdbCredentialStore(dir / "state", dir / "good.key");
    REQUIRE(store.ok());
    REQUIRE((*store)->addTeam({"ops", true, {}, 0}).ok());
    REQUIRE((*store)->setSecret("k", "", secret("value")).ok());
  }
  auto wrong = openLmdbCredentialStore(dir / "state", dir / "bad.key");
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error().code == ErrorCode::kInternal);
  CHECK(contains(wrong.error().message, "master key does not match this state directory"));
  CHECK_FALSE(contains(wrong.error().message, "rekey was interrupted"));
  // keywayd under systemd reads a copy of the key (LoadCredential=): the next key of an
  // interrupted rekey is out of its sight, so the error says who can finish it.
  REQUIRE(::mkdir((dir / "creds").c_str(), 0700) == 0);
  REQUIRE(createMasterKeyFile(dir / "creds/master.key").ok());
  ::setenv("CREDENTIALS_DIRECTORY", (dir / "creds").c_str(), 1);
  auto copied = openLmdbCredentialStore(dir / "state", dir / "creds/master.key");
  ::unsetenv("CREDENTIALS_DIRECTORY");
  REQUIRE_FALSE(copied.ok());
  CHECK(contains(copied.error().message, "keywayctl status"));
  auto good = openLmdbCredentialStore(dir / "state", dir / "good.key");
  REQUIRE(good.ok());
  CHECK((*(*good)->resolveSecret("k", ""))->value.view() == "value");
}

TEST_CASE("lmdb: a write through a second instance is visible at once (same process)") {
  TempDir dir;
  REQUIRE(createMasterKeyFile(dir / "master.key").ok());
  auto daemon = openLmdbCredentialStore(dir / "state", dir / "master.key");
  auto ctl = openLmdbCredentialStore(dir / "state", dir / "master.key");
  REQUIRE(daemon.ok());
  REQUIRE(ctl.ok());
  auto env1 = LmdbEnv::open(credentialEnvPath(dir / "state"));
  auto env2 = LmdbEnv::open(credentialEnvPath(dir / "state") + "/");
  REQUIRE(env1.ok());
  REQUIRE(env2.ok());
  CHECK(env1->get() == env2->get());  // one MDB_env per file per process
  const uint64_t g0 = (*daemon)->generation();
  REQUIRE((*ctl)->addTeam({"ops", true, {}, 0}).ok());
  REQUIRE((*ctl)->setSecret("k", "", secret("v1")).ok());
  CHECK((*daemon)->generation() != g0);
  CHECK((*(*daemon)->resolveSecret("k", "ops"))->value.view() == "v1");
  // Another durability setting for an open path is refused.
  LmdbEnvOptions nosync;
  nosync.durable = false;
  CHECK_FALSE(LmdbEnv::open(credentialEnvPath(dir / "state"), nosync).ok());
}

TEST_CASE("lmdb: a write by another process is visible at once") {
  TempDir dir;
  REQUIRE(createMasterKeyFile(dir / "master.key").ok());
  auto daemon = openLmdbCredentialStore(dir / "state", dir / "master.key");
  REQUIRE(daemon.ok());
  REQUIRE((*daemon)->addTeam({"ops", true, {}, 0}).ok());
  CHECK_FALSE((*(*daemon)->resolveSecret("bosa.api_key", "ops")).has_value());
  const uint64_t g0 = (*daemon)->generation();

  const int rc = runInChild([&] {
    auto ctl = openLmdbCredentialStore(dir / "state", dir / "master.key");
    if (!ctl.ok()) return 10;
    if (!(*ctl)->setSecret("bosa.api_key", "", secret("from-child")).ok()) return 11;
    if (!(*ctl)->addClient("app", "ops").ok()) return 12;
    return 0;
  });
  REQUIRE(rc == 0);
  CHECK((*daemon)->generation() > g0);
  auto resolved = (*daemon)->resolveSecret("bosa.api_key", "ops");
  REQUIRE(resolved.ok());
  REQUIRE(resolved->has_value());
  CHECK((*resolved)->value.view() == "from-child");
  CHECK((*daemon)->listClients()->size() == 1);
}

// Direct access to the raw records, as an attacker with write access to the files would have.
struct RawEnv {
  std::shared_ptr<LmdbEnv> env;
  MDB_dbi secrets = 0;
  MDB_dbi bosa_users = 0;
  MDB_dbi teams = 0;
  MDB_dbi meta = 0;
  explicit RawEnv(const std::string& state) {
    env = LmdbEnv::open(credentialEnvPath(state)).value();
    secrets = env->openDbi("secrets").value();
    bosa_users = env->openDbi("bosa_users").value();
    teams = env->openDbi("teams").value();
    meta = env->openDbi("meta").value();
  }
  std::string get(MDB_dbi dbi, const std::string& key) {
    auto txn = env->beginRead();
    REQUIRE(txn.ok());
    auto v = txn->get(dbi, key);
    REQUIRE(v.ok());
    REQUIRE(v->has_value());
    return std::string(**v);
  }
  void put(MDB_dbi dbi, const std::string& key, const std::string& value) {
    REQUIRE(env->update([&](LmdbTxn& txn) { return txn.put(dbi, key, value); }).ok());
  }
};

TEST_CASE("lmdb: tampered or moved ciphertexts fail closed") {
  TempDir dir;
  REQUIRE(createMasterKeyFile(dir / "master.key").ok());
  auto store = openLmdbCredentialStore(dir / "state", dir / "master.key");
  REQUIRE(store.ok());
  auto& s = **store;
  REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
  REQUIRE(s.setSecret("k", "ops", secret("team-value")).ok());
  REQUIRE(s.setSecret("k", "", secret("shared-value")).ok());
  REQUIRE(s.addBosaUser("alice", secret("sk-user-a"), {"ops"}).ok());
  REQUIRE(s.addBosaUser("bob", secret("sk-user-b"), {"ops"}).ok());
  RawEnv raw(dir / "state");

  SUBCASE("a flipped ciphertext byte") {
    std::string value = raw.get(raw.secrets, secretKey("ops", "k"));
    value[value.size() - 3] ^= 0x40;
    raw.put(raw.secrets, secretKey("ops", "k"), value);
    auto r = s.resolveSecret("k", "ops");
    REQUIRE_FALSE(r.ok());
    CHECK(contains(r.error().message, "failed authentication"));
  }
  SUBCASE("a team secret copied over the shared one") {
    raw.put(raw.secrets, secretKey("", "k"), raw.get(raw.secrets, secretKey("ops", "k")));
    CHECK_FALSE(s.resolveSecret("k", "").ok());
    CHECK((*s.resolveSecret("k", "ops"))->value.view() == "team-value");
  }
  SUBCASE("one user's record copied over another's") {
    raw.put(raw.bosa_users, "bob", raw.get(raw.bosa_users, "alice"));
    CHECK_FALSE(s.bosaUserSecret("bob").ok());
    CHECK((*s.bosaUserSecret("alice"))->view() == "sk-user-a");
  }
  SUBCASE("a malformed record makes listing fail cleanly") {
    raw.put(raw.teams, "junk", "\x01\x02garbage");
    auto list = s.listTeams();
    REQUIRE_FALSE(list.ok());
    CHECK(contains(list.error().message, "malformed team record"));
  }
  SUBCASE("a newer schema version is refused on open") {
    raw.put(raw.meta, std::string(kMetaSchemaVersion), encodeSchemaVersion(kSchemaVersion + 1));
    auto reopened = openLmdbCredentialStore(dir / "state", dir / "master.key");
    REQUIRE_FALSE(reopened.ok());
    CHECK(contains(reopened.error().message, "upgrade keyway"));
  }
}

TEST_CASE("lmdb: no secret or token in plaintext in any file of the state dir") {
  TempDir dir;
  REQUIRE(createMasterKeyFile(dir / "master.key").ok());
  const std::string state = dir / "state";
  const std::string secret_value = "CANARY-secret-value-8d2f1c";
  const std::string user_secret = "sk-user-CANARY-user-secret-77a1";
  const std::string user_token = "eyJhbGciOi.CANARY-user-token.sig";
  std::string client_token;
  {
    auto store = openLmdbCredentialStore(state, dir / "master.key");
    REQUIRE(store.ok());
    auto& s = **store;
    REQUIRE(s.addTeam({"canary-team", true, {}, 0}).ok());
    REQUIRE(s.setSecret("canary.secret.name", "", secret(secret_value)).ok());
    REQUIRE(s.setSecret("canary.team.secret", "canary-team", secret(secret_value)).ok());
    REQUIRE(s.addBosaUser("canary-user", secret(user_secret), {"canary-team"}).ok());
    REQUIRE(s.storeUserToken("canary-user", {secret(user_token), 1}).ok());
    auto t = s.addClient("canary-client", "canary-team");
    REQUIRE(t.ok());
    client_token = std::string(t->view());
    auto env = LmdbEnv::open(credentialEnvPath(state));
    REQUIRE(env.ok());
    REQUIRE((*env)->sync(true).ok());
  }
  const auto files = listFiles(state);
  REQUIRE(files.size() >= 2);  // data.mdb and lock.mdb
  bool name_seen = false;
  for (const auto& file : files) {
    const std::string content = readFile(file);
    CHECK_FALSE_MESSAGE(contains(content, secret_value), file);
    CHECK_FALSE_MESSAGE(contains(content, user_secret), file);
    CHECK_FALSE_MESSAGE(contains(content, user_token), file);
    CHECK_FALSE_MESSAGE(contains(content, client_token), file);
    CHECK_FALSE_MESSAGE(contains(content, client_token.substr(3)), file);
    if (contains(content, "canary.secret.name") && contains(content, "canary-user")) {
      name_seen = true;
    }
  }
  CHECK(name_seen);  // positive control: the grep does see what is stored in the clear
}

TEST_CASE("lmdb env: adopts a map grown by another process (MDB_MAP_RESIZED)") {
  TempDir dir;
  LmdbEnvOptions small;
  small.map_size = size_t{1} << 20;  // 1 MiB
  auto env = LmdbEnv::open(dir / "env", small);
  REQUIRE(env.ok());
  auto dbi = (*env)->openDbi("data");
  REQUIRE(dbi.ok());
  const std::string blob(4096, 'b');
  const int rc = runInChild([&] {
    LmdbEnvOptions big;
    big.map_size = size_t{64} << 20;
    auto child_env = LmdbEnv::open(dir / "env", big);
    if (!child_env.ok()) return 10;
    auto child_dbi = (*child_env)->openDbi("data");
    if (!child_dbi.ok()) return 11;
    auto status = (*child_env)->update([&](LmdbTxn& txn) -> core::Status {
      for (int i = 0; i < 1024; ++i) {  // ~4 MiB: beyond the parent's 1 MiB map
        auto put = txn.put(*child_dbi, "k" + std::to_string(i), blob);
        if (!put.ok()) return put;
      }
      return core::okStatus();
    });
    return status.ok() ? 0 : 12;
  });
  REQUIRE(rc == 0);
  auto txn = (*env)->beginRead();  // MDB_MAP_RESIZED inside, handled by adopting the new size
  REQUIRE(txn.ok());
  auto v = txn->get(*dbi, "k1023");
  REQUIRE(v.ok());
  REQUIRE(v->has_value());
  CHECK(**v == blob);
  auto n = txn->count(*dbi);
  REQUIRE(n.ok());
  CHECK(*n == 1024);
}

TEST_CASE("lmdb env: a full map and a full reader table give clear errors") {
  TempDir dir;
  LmdbEnvOptions options;
  options.map_size = size_t{1} << 20;
  options.max_readers = 2;
  auto env = LmdbEnv::open(dir / "env", options);
  REQUIRE(env.ok());
  auto dbi = (*env)->openDbi("data");
  REQUIRE(dbi.ok());
  auto full = (*env)->update([&](LmdbTxn& txn) -> core::Status {
    for (int i = 0; i < 1024; ++i) {
      auto put = txn.put(*dbi, "k" + std::to_string(i), std::string(4096, 'x'));
      if (!put.ok()) return put;
    }
    return core::okStatus();
  });
  REQUIRE_FALSE(full.ok());
  CHECK(full.error().code == ErrorCode::kUnavailable);
  CHECK(contains(full.error().message, "map is full"));
  CHECK(contains(full.error().message, (*env)->path()));

  auto r1 = (*env)->beginRead();
  auto r2 = (*env)->beginRead();
  REQUIRE(r1.ok());
  REQUIRE(r2.ok());
  auto r3 = (*env)->beginRead();
  REQUIRE_FALSE(r3.ok());
  CHECK(r3.error().code == ErrorCode::kUnavailable);
  CHECK(contains(r3.error().message, "too many concurrent readers"));
  r1->abort();
  CHECK((*env)->beginRead().ok());  // a freed slot is usable again
}

TEST_CASE("lmdb env: transactions, cursors and prefix iteration") {
  TempDir dir;
  auto env = LmdbEnv::open(dir / "env");
  REQUIRE(env.ok());
  auto dbi = (*env)->openDbi("t");
  REQUIRE(dbi.ok());
  REQUIRE((*env)->update([&](LmdbTxn& txn) -> core::Status {
    for (const char* k : {"a1", "a2", "b1", "b2", "c"}) {
      auto put = txn.put(*dbi, k, std::string("v-") + k);
      if (!put.ok()) return put;
    }
    return core::okStatus();
  }).ok());
  std::vector<std::string> seen;
  REQUIRE((*env)->view([&](LmdbTxn& txn) {
    return txn.forEach(*dbi, "b", [&](std::string_view k, std::string_view v) {
      seen.push_back(std::string(k) + "=" + std::string(v));
      return true;
    });
  }).ok());
  CHECK(seen == std::vector<std::string>{"b1=v-b1", "b2=v-b2"});
  // A failing update is rolled back.
  auto failed = (*env)->update([&](LmdbTxn& txn) -> core::Status {
    auto put = txn.put(*dbi, "zz", "v");
    if (!put.ok()) return put;
    return core::Error::make(ErrorCode::kBadRequest, "stop");
  });
  CHECK_FALSE(failed.ok());
  auto txn = (*env)->beginWrite();
  REQUIRE(txn.ok());
  CHECK_FALSE(txn->get(*dbi, "zz")->has_value());
  auto dup = txn->put(*dbi, "a1", "x", MDB_NOOVERWRITE);
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.error().code == ErrorCode::kBadRequest);
  CHECK_FALSE(txn->put(*dbi, std::string(600, 'k'), "x").ok());  // key too long: an error
  CHECK_FALSE(txn->put(*dbi, "", "x").ok());
  auto cursor = LmdbCursor::open(*txn, *dbi);
  REQUIRE(cursor.ok());
  REQUIRE(*cursor->last());
  CHECK(cursor->key() == "c");
  REQUIRE(cursor->del().ok());
  REQUIRE(txn->commit().ok());
  CHECK_FALSE(txn->commit().ok());  // finished
  CHECK_FALSE(cursor->next().ok());  // its transaction ended: an error, not a crash
  auto read = (*env)->beginRead();
  REQUIRE(read.ok());
  CHECK_FALSE(read->get(*dbi, "c")->has_value());
  CHECK_FALSE(read->put(*dbi, "x", "y").ok());  // read-only
}

}  // namespace
}  // namespace keyway::storage
