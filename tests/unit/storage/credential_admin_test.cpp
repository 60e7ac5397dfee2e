// Tests of the credential store's whole-store operations (storage/credential_admin.hpp): rekey
// with its key file protocol (each step interrupted by a SIGKILL in a child process, then the
// next open settling it), a store that follows a rekey while open, the hashing subkeys carried
// over, backup and its file format (truncated, flipped, foreign), and restore (other key,
// --key-file, the saved copy, a kill before the commit, a store open across it).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "storage/backup_format.hpp"
#include "storage/credential_admin.hpp"
#include "storage/credential_keys.hpp"
#include "storage/file_util.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/master_key.hpp"
#include "storage/record_codec.hpp"
#include "tests/unit/storage/test_util.hpp"

namespace keyway::storage {
namespace {

using core::ErrorCode;
using keyway::testing::contains;
using keyway::testing::fileMode;
using keyway::testing::readFile;
using keyway::testing::runInChild;
using keyway::testing::TempDir;
using keyway::testing::writeFile;

core::SecretString secret(std::string_view v) { return core::SecretString(v); }

constexpr std::string_view kSharedValue = "sk-live-CANARY-shared-51b0";
constexpr std::string_view kTeamValue = "sk-live-CANARY-team-77c2";
constexpr std::string_view kUserSecret = "sk-user-CANARY-alice-3e9d";
constexpr std::string_view kUserToken = "eyJhbGciOi.CANARY-minted.sig";

// A state dir with its key and one record of every kind; `token` is app's client token.
struct Populated {
  TempDir dir;
  std::string state = dir / "state";
  std::string key = dir / "state/master.key";
  std::string token;

  Populated() {
    REQUIRE(initStateDir(state, key).ok());
    auto store = open();
    auto& s = *store;
    REQUIRE(s.addTeam({"ops", true, {}, 0}).ok());
    REQUIRE(s.setSecret("bundleup.api_key", "", secret(kSharedValue)).ok());
    REQUIRE(s.setSecret("bundleup.api_key", "ops", secret(kTeamValue)).ok());
    REQUIRE(s.addBosaUser("alice", secret(kUserSecret), {"ops"}).ok());
    REQUIRE(s.storeUserToken("alice", {secret(kUserToken), 4102444800}).ok());
    auto t = s.addClient("app", "ops");
    REQUIRE(t.ok());
    token = std::string(t->view());
  }

  std::unique_ptr<core::CredentialStore> open(const std::string& key_file = "") const {
    auto store = openLmdbCredentialStore(state, key_file.empty() ? key : key_file);
    REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error().message));
    return std::move(store).value();
  }
};

// Every record reads back as Populated wrote it.
void checkAllRecords(core::CredentialStore& s, const std::string& token) {
  auto shared = s.resolveSecret("bundleup.api_key", "");
  REQUIRE(shared.ok());
  REQUIRE(shared->has_value());
  CHECK((*shared)->value.view() == kSharedValue);
  auto team = s.resolveSecret("bundleup.api_key", "ops");
  REQUIRE(team.ok());
  REQUIRE(team->has_value());
  CHECK((*team)->value.view() == kTeamValue);
  auto user = s.bosaUserSecret("alice");
  REQUIRE(user.ok());
  REQUIRE(user->has_value());
  CHECK((*user)->view() == kUserSecret);
  auto client = s.findClientByToken(token);
  REQUIRE(client.ok());
  REQUIRE(client->has_value());
  CHECK((*client)->name == "app");
}

// --- keyring and format units -----------------------------------------------------------------

TEST_CASE("keyring: key ids name the key; a rekeyed keyring keeps hashes, not seals") {
  auto k1 = MasterKey::fromBytes(std::string(32, 'a')).value();
  auto k2 = MasterKey::fromBytes(std::string(32, 'b')).value();
  const Keyring a = Keyring::create(k1).value();
  const Keyring a_again = Keyring::create(k1).value();
  const Keyring b = Keyring::create(k2).value();
  CHECK(a.keyId().size() == kKeyIdBytes);
  CHECK(a.keyId() == a_again.keyId());
  CHECK(a.keyId() != b.keyId());
  CHECK_FALSE(contains(a.keyId(), std::string(32, 'a').substr(0, 8)));

  const Keyring b_carrying_a = Keyring::create(k2, a).value();
  CHECK(b_carrying_a.keyId() == b.keyId());
  CHECK(b_carrying_a.tokenHash("kw_x") == a.tokenHash("kw_x"));
  CHECK(b_carrying_a.fingerprint("v") == a.fingerprint("v"));
  CHECK(b.tokenHash("kw_x") != a.tokenHash("kw_x"));
  const std::string sealed = b_carrying_a.seal("value", "ad");
  CHECK(b.open(sealed, "ad").ok());       // sealing follows the master key
  CHECK_FALSE(a.open(sealed, "ad").ok());  // the old key opens nothing sealed anew

  // The hashing subkeys travel sealed, and open only under their master key and record.
  const std::string carried = b_carrying_a.sealHashKeys("ad-hash-keys");
  auto reopened = Keyring::create(k2, carried, "ad-hash-keys");
  REQUIRE(reopened.ok());
  CHECK(reopened->tokenHash("kw_y") == a.tokenHash("kw_y"));
  CHECK_FALSE(Keyring::create(k1, carried, "ad-hash-keys").ok());
  CHECK_FALSE(Keyring::create(k2, carried, "ad-other").ok());
}

TEST_CASE("backup format: round trip, and every damaged file is refused cleanly") {
  auto key = MasterKey::fromBytes(std::string(32, 'k')).value();
  const Keyring ring = Keyring::create(key).value();
  Backup b;
  b.schema_version = kSchemaVersion;
  b.key_id = ring.keyId();
  b.generation = 42;
  b.created_unix = 1700000000;
  b.records = {{"teams", "ops", encodeTeam({"ops", true, {}, 1})},
               {"meta", "schema_version", encodeSchemaVersion(kSchemaVersion)}};
  const std::string bytes = encodeBackup(b, ring);
  auto back = decodeBackup(bytes);
  REQUIRE(back.ok());
  CHECK(back->generation == 42);
  CHECK(back->created_unix == 1700000000);
  CHECK(back->key_id == ring.keyId());
  REQUIRE(back->records.size() == 2);
  CHECK(back->records[0].key == "ops");
  CHECK(backupAuthentic(bytes, ring));
  CHECK_FALSE(backupAuthentic(bytes, Keyring::create(MasterKey::fromBytes(std::string(32, 'z')).value()).value()));

  for (size_t n = 0; n < bytes.size(); ++n) {
    auto cut = decodeBackup(bytes.substr(0, n));
    REQUIRE_FALSE(cut.ok());
    CHECK(cut.error().code == ErrorCode::kBadRequest);
  }
  CHECK_FALSE(decodeBackup(bytes + "x").ok());
  size_t refused = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x20);
    auto d = decodeBackup(flipped);
    if (!d.ok() || !backupAuthentic(flipped, ring)) ++refused;
  }
  CHECK(refused == bytes.size());  // no flipped byte passes both the parser and the MAC
  auto not_backup = decodeBackup("SQLite format 3\0 and the rest of a database");
  REQUIRE_FALSE(not_backup.ok());
  CHECK(contains(not_backup.error().message, "keywayctl backup"));
  std::string newer = bytes;
  newer[8] = 2;  // format 2
  auto other_format = decodeBackup(newer);
  REQUIRE_FALSE(other_format.ok());
  CHECK(contains(other_format.error().message, "format 2"));
}

// --- rekey ------------------------------------------------------------------------------------

TEST_CASE("rekey: records re-sealed, tokens valid, old key refused, a live store follows") {
  Populated p;
  const std::string old_key = readFile(p.key);
  auto daemon = p.open();  // open across the rekey, as keywayd is
  checkAllRecords(*daemon, p.token);
  const uint64_t g0 = daemon->generation();
  const std::string fingerprint = daemon->fingerprint("some value");

  auto report = rekeyCredentialStore(p.state, p.key);
  REQUIRE_MESSAGE(report.ok(), (report.ok() ? "" : report.error().message));
  CHECK(report->secrets == 2);
  CHECK(report->bosa_users == 1);
  CHECK(report->user_tokens == 1);
  CHECK(report->old_key_id != report->new_key_id);
  CHECK(report->generation > g0);
  const std::string new_key = readFile(p.key);
  CHECK(new_key.size() == 32);
  CHECK(new_key != old_key);
  CHECK(fileMode(p.key) == 0600);
  CHECK_FALSE(pathExists(nextMasterKeyFile(p.key)));

  // The open store reads the re-sealed records with the new key, without a reopen.
  CHECK(daemon->generation() > g0);
  checkAllRecords(*daemon, p.token);
  auto minted = daemon->findUserToken("alice");
  REQUIRE(minted.ok());
  CHECK((*minted)->token.view() == kUserToken);
  CHECK(daemon->fingerprint("some value") == fingerprint);  // the response cache stays warm
  checkAllRecords(*p.open(), p.token);

  // The old key file content no longer opens the store, and says which key would.
  writeFile(p.dir / "old.key", old_key, 0600);
  auto refused = openLmdbCredentialStore(p.state, p.dir / "old.key");
  REQUIRE_FALSE(refused.ok());
  CHECK(contains(refused.error().message, "master key does not match"));
  CHECK(contains(refused.error().message, "key id " + report->new_key_id));
  CHECK(contains(refused.error().message, "key id " + report->old_key_id));

  // And again: a second rotation carries the same hashing keys on.
  REQUIRE(rekeyCredentialStore(p.state, p.key).ok());
  checkAllRecords(*daemon, p.token);
  checkAllRecords(*p.open(), p.token);
}

TEST_CASE("rekey: a store made before key ids keeps its client tokens") {
  Populated p;
  {
    // Remove what rekey writes, as in a store initialised before it existed (hashing subkeys
    // then come from the master key itself).
    auto env = openCredentialEnv(p.state).value();
    REQUIRE(env.env->update([&](LmdbTxn& txn) -> core::Status {
      REQUIRE(txn.del(env.dbis.meta, kMetaKeyId).ok());
      REQUIRE(txn.del(env.dbis.meta, kMetaHashKeys).ok());
      return core::okStatus();
    }).ok());
  }
  checkAllRecords(*p.open(), p.token);
  REQUIRE(rekeyCredentialStore(p.state, p.key).ok());
  checkAllRecords(*p.open(), p.token);
}

TEST_CASE("rekey: a kill -9 at every step leaves the old or the new state, settled at open") {
  const RekeyStep steps[] = {RekeyStep::kNextKeyWritten, RekeyStep::kResealed,
                             RekeyStep::kCommitted, RekeyStep::kRenamed};
  for (RekeyStep step : steps) {
    CAPTURE(static_cast<int>(step));
    Populated p;
    const std::string old_key = readFile(p.key);
    auto daemon = p.open();
    const int rc = runInChild([&] {
      auto r = rekeyCredentialStore(p.state, p.key, [&](RekeyStep s) {
        if (s == step) ::raise(SIGKILL);
      });
      return r.ok() ? 0 : 1;
    });
    REQUIRE(rc == -1);  // killed at the step
    const std::string next = nextMasterKeyFile(p.key);
    const bool committed = step == RekeyStep::kCommitted || step == RekeyStep::kRenamed;
    CHECK(pathExists(next) == (step != RekeyStep::kRenamed));
    const std::string next_key = readFile(next);
    // The store open across the crash reads every record: with the old key before the commit,
    // with the next file's key after it (not yet renamed).
    checkAllRecords(*daemon, p.token);
    CHECK((readFile(p.key) == old_key) == (step != RekeyStep::kRenamed));

    // The next open settles the files: rename (committed) or remove the next key (not).
    auto reopened = p.open();
    checkAllRecords(*reopened, p.token);
    CHECK_FALSE(pathExists(next));
    if (!committed) CHECK(readFile(p.key) == old_key);
    if (step == RekeyStep::kCommitted) CHECK(readFile(p.key) == next_key);
    if (committed) CHECK(readFile(p.key) != old_key);
    CHECK(fileMode(p.key) == 0600);
    // A later rekey runs normally (the writer lock of the killed process was recovered).
    REQUIRE(rekeyCredentialStore(p.state, p.key).ok());
    checkAllRecords(*p.open(), p.token);
  }
}

TEST_CASE("rekey: a store whose key file is a copy (systemd credentials) fails closed, clearly") {
  Populated p;
  // keywayd under systemd reads the copy LoadCredential= made at start.
  REQUIRE(ensurePrivateDirectory(p.dir / "creds").ok());
  writeFile(p.dir / "creds/master.key", readFile(p.key), 0600);
  auto daemon = p.open(p.dir / "creds/master.key");
  checkAllRecords(*daemon, p.token);
  REQUIRE(rekeyCredentialStore(p.state, p.key).ok());
  auto r = daemon->resolveSecret("bundleup.api_key", "");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kUnavailable);
  CHECK(contains(r.error().message, "systemctl restart keyway"));
  CHECK_FALSE(contains(r.error().message, kSharedValue));
  // The restart: systemd copies the new key file.
  writeFile(p.dir / "creds/master.key", readFile(p.key), 0600);
  checkAllRecords(*p.open(p.dir / "creds/master.key"), p.token);
}

TEST_CASE("rekey: a key file in a read-only place is refused before anything changes") {
  if (::geteuid() == 0) return;  // root writes anywhere: nothing to refuse
  Populated p;
  REQUIRE(ensurePrivateDirectory(p.dir / "ro").ok());
  writeFile(p.dir / "ro/master.key", readFile(p.key), 0400);
  ::chmod((p.dir / "ro").c_str(), 0500);
  auto r = rekeyCredentialStore(p.state, p.dir / "ro/master.key");
  ::chmod((p.dir / "ro").c_str(), 0700);
  REQUIRE_FALSE(r.ok());
  CHECK(contains(r.error().message, "CREDENTIALS_DIRECTORY"));
  CHECK(contains(r.error().message, "Nothing was changed"));
  checkAllRecords(*p.open(), p.token);
}

TEST_CASE("rekey: a second rekey waits for the first one's rename, so no key is lost") {
  // A second rekey that got in between the first one's commit and its rename, and then died
  // after writing its own next key, used to leave that uncommitted key as master.key.
  Populated p;
  std::mutex mu;
  std::condition_variable cv;
  bool second_wrote_next = false;
  std::thread second;
  auto first = rekeyCredentialStore(p.state, p.key, [&](RekeyStep s) {
    if (s != RekeyStep::kCommitted) return;
    second = std::thread([&] {
      try {
        (void)rekeyCredentialStore(p.state, p.key, [&](RekeyStep s2) {
          if (s2 != RekeyStep::kNextKeyWritten) return;
          {
            std::lock_guard<std::mutex> lock(mu);
            second_wrote_next = true;
          }
          cv.notify_all();
          throw std::runtime_error("the second rekey dies before its commit");
        });
      } catch (const std::runtime_error&) {
      }
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::milliseconds(1500), [&] { return second_wrote_next; });
    // With the rekey lock the second one is still waiting for it here.
    CHECK_FALSE(second_wrote_next);
  });
  REQUIRE(first.ok());
  second.join();
  CHECK(second_wrote_next);  // it ran, after the first one finished
  // The store opens under master.key (the next key the second one left is settled away).
  checkAllRecords(*p.open(), p.token);
  CHECK_FALSE(pathExists(p.key + ".next"));
}

TEST_CASE("rekey: a key file owned by another user is refused before anything changes") {
  if (::geteuid() != 0) return;  // only root can make a file another user owns
  Populated p;
  REQUIRE(::chown(p.key.c_str(), 65534, 65534) == 0);
  auto r = rekeyCredentialStore(p.state, p.key);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kBadRequest);
  CHECK(contains(r.error().message, "owned by uid 65534"));
  CHECK(contains(r.error().message, "Nothing was changed"));
  REQUIRE(::chown(p.key.c_str(), 0, 0) == 0);
  checkAllRecords(*p.open(), p.token);
}

// --- backup and restore -----------------------------------------------------------------------

TEST_CASE("backup: a sealed, private, atomic copy; restore puts it back and saves what it replaced") {
  Populated p;
  auto daemon = p.open();
  const std::string file = p.dir / "creds.backup";
  auto b = backupCredentialStore(p.state, p.key, file, false);
  REQUIRE_MESSAGE(b.ok(), (b.ok() ? "" : b.error().message));
  CHECK(b->counts.teams == 1);
  CHECK(b->counts.clients == 1);
  CHECK(b->counts.secrets == 2);
  CHECK(b->counts.bosa_users == 1);
  CHECK(fileMode(file) == 0600);
  const std::string bytes = readFile(file);
  CHECK(bytes.size() == b->bytes);
  for (std::string_view canary : {kSharedValue, kTeamValue, kUserSecret, kUserToken}) {
    CHECK_FALSE(contains(bytes, canary));
  }
  CHECK_FALSE(contains(bytes, p.token));
  CHECK_FALSE(contains(bytes, readFile(p.key)));
  CHECK(contains(bytes, "bundleup.api_key"));  // positive control: names are in the clear

  // Not overwritten without `replace`.
  auto again = backupCredentialStore(p.state, p.key, file, false);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == ErrorCode::kBadRequest);
  CHECK(readFile(file) == bytes);
  REQUIRE(backupCredentialStore(p.state, p.key, file, true).ok());

  // Changes after the backup, seen by the open store.
  REQUIRE(daemon->addTeam({"dev", true, {}, 0}).ok());
  REQUIRE(daemon->setSecret("bundleup.api_key", "", secret("changed-after-backup")).ok());
  REQUIRE(daemon->revokeClient("app").ok());
  const uint64_t g_before = daemon->generation();

  RestoreOptions options;
  options.saved_copy_dir = p.dir / "saved";
  REQUIRE(ensurePrivateDirectory(options.saved_copy_dir).ok());
  // Run as root into a directory another user owns (keywayd's), the copy goes to that user.
  const bool as_root = ::geteuid() == 0;
  if (as_root) REQUIRE(::chown(options.saved_copy_dir.c_str(), 65534, 65534) == 0);
  auto r = restoreCredentialStore(p.state, p.key, file, options);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
  if (as_root) {
    struct stat st {};
    REQUIRE(::stat(r->saved_copy.c_str(), &st) == 0);
    CHECK(st.st_uid == 65534u);
    CHECK(st.st_gid == 65534u);
  }
  CHECK(r->before.teams == 2);
  CHECK(r->after.teams == 1);
  CHECK(r->after.secrets == 2);
  CHECK(r->generation_after > r->generation_before);
  CHECK(r->generation_after > r->backup_generation);
  CHECK(contains(r->saved_copy, p.dir / "saved/credentials-replaced-"));
  CHECK(contains(r->saved_copy, "-g" + std::to_string(r->generation_before) + ".backup"));
  CHECK(fileMode(r->saved_copy) == 0600);
  // The open store serves the restored records, its generation forward (never back to the
  // backup's, which it may have cached results for).
  CHECK(daemon->generation() > g_before);
  checkAllRecords(*daemon, p.token);
  CHECK_FALSE(daemon->findTeam("dev")->has_value());
  CHECK_FALSE(daemon->findUserToken("alice")->has_value());  // minted tokens are not restored

  // The saved copy undoes the restore.
  auto undo = restoreCredentialStore(p.state, p.key, r->saved_copy);
  REQUIRE(undo.ok());
  CHECK(daemon->findTeam("dev")->has_value());
  CHECK((*daemon->resolveSecret("bundleup.api_key", ""))->value.view() == "changed-after-backup");
}

TEST_CASE("restore: another key, a damaged file or no file change nothing") {
  Populated p;
  Populated other;  // another store, another master key
  const std::string foreign = other.dir / "foreign.backup";
  REQUIRE(backupCredentialStore(other.state, other.key, foreign, false).ok());
  const std::string good = p.dir / "good.backup";
  REQUIRE(backupCredentialStore(p.state, p.key, good, false).ok());
  auto daemon = p.open();
  REQUIRE(daemon->addTeam({"after", true, {}, 0}).ok());
  const uint64_t g = daemon->generation();

  auto refused = restoreCredentialStore(p.state, p.key, foreign);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::kBadRequest);
  CHECK(contains(refused.error().message, "another master key"));
  CHECK(contains(refused.error().message, "--key-file"));

  const std::string bytes = readFile(good);
  const std::pair<const char*, std::string> damaged[] = {
      {"empty", ""},
      {"truncated", bytes.substr(0, bytes.size() / 2)},
      {"one byte short", bytes.substr(0, bytes.size() - 1)},
      {"flipped", [&] {
         std::string f = bytes;
         f[f.size() / 2] = static_cast<char>(f[f.size() / 2] ^ 1);
         return f;
       }()},
      {"an LMDB file", readFile(credentialEnvPath(p.state) + "/data.mdb")},
  };
  for (const auto& [what, content] : damaged) {
    CAPTURE(what);
    writeFile(p.dir / "damaged.backup", content, 0600);
    auto r = restoreCredentialStore(p.state, p.key, p.dir / "damaged.backup");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kBadRequest);
  }
  auto missing = restoreCredentialStore(p.state, p.key, p.dir / "no-such.backup");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == ErrorCode::kBadRequest);

  CHECK(daemon->generation() == g);
  CHECK(daemon->findTeam("after")->has_value());
  checkAllRecords(*daemon, p.token);
}

TEST_CASE("restore: a backup taken before a rekey, with its old key file") {
  Populated p;
  const std::string file = p.dir / "before-rekey.backup";
  REQUIRE(backupCredentialStore(p.state, p.key, file, false).ok());
  writeFile(p.dir / "old.key", readFile(p.key), 0600);
  REQUIRE(rekeyCredentialStore(p.state, p.key).ok());
  auto daemon = p.open();

  auto without = restoreCredentialStore(p.state, p.key, file);
  REQUIRE_FALSE(without.ok());
  CHECK(contains(without.error().message, "another master key"));
  RestoreOptions options;
  options.backup_key_file = p.dir / "old.key";
  auto with = restoreCredentialStore(p.state, p.key, file, options);
  REQUIRE_MESSAGE(with.ok(), (with.ok() ? "" : with.error().message));
  CHECK(with->resealed);
  checkAllRecords(*daemon, p.token);
  checkAllRecords(*p.open(), p.token);
  CHECK_FALSE(openLmdbCredentialStore(p.state, p.dir / "old.key").ok());  // still the new key
}

TEST_CASE("restore: onto a fresh state dir (a new host), with the key the backup needs") {
  Populated p;
  const std::string file = p.dir / "move.backup";
  REQUIRE(backupCredentialStore(p.state, p.key, file, false).ok());
  TempDir host;
  REQUIRE(ensurePrivateDirectory(host / "state").ok());
  writeFile(host / "state/master.key", readFile(p.key), 0600);
  auto r = restoreCredentialStore(host / "state", host / "state/master.key", file);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
  CHECK(r->before.teams == 0);
  CHECK(r->saved_copy.empty());
  auto store = openLmdbCredentialStore(host / "state", host / "state/master.key");
  REQUIRE(store.ok());
  checkAllRecords(**store, p.token);
}

TEST_CASE("restore: a kill -9 before the commit leaves the old records") {
  Populated p;
  const std::string file = p.dir / "x.backup";
  REQUIRE(backupCredentialStore(p.state, p.key, file, false).ok());
  auto daemon = p.open();
  REQUIRE(daemon->addTeam({"kept", true, {}, 0}).ok());
  const int rc = runInChild([&] {
    RestoreOptions options;
    options.before_commit = [] { ::raise(SIGKILL); };
    return restoreCredentialStore(p.state, p.key, file, options).ok() ? 0 : 1;
  });
  REQUIRE(rc == -1);
  CHECK(daemon->findTeam("kept")->has_value());
  checkAllRecords(*daemon, p.token);
  // The writer lock is free again, and the restore then goes through.
  REQUIRE(restoreCredentialStore(p.state, p.key, file).ok());
  CHECK_FALSE(daemon->findTeam("kept")->has_value());
}

}  // namespace
}  // namespace keyway::storage
