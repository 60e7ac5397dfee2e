// rekey, backup and restore of the LMDB credential store: each one write (or read) transaction
// next to a running keywayd, with the key file protocol of storage/credential_keys.hpp.
#include "storage/credential_admin.hpp"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <utility>
#include <vector>

#include "storage/backup_format.hpp"
#include "storage/credential_keys.hpp"
#include "storage/file_util.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/master_key.hpp"
#include "storage/names.hpp"
#include "storage/record_codec.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

namespace {

// The record re-sealed: its sealed field opened with `from` and sealed again with `to` (same
// associated data, so it stays bound to its table and key). Records without a sealed field
// come back unchanged; meta records are the caller's (writeKeyRecords).
Result<std::string> resealRecord(std::string_view table_name, std::string_view key,
                                 std::string_view value, const Keyring& from, const Keyring& to) {
  const std::string ad = associatedData(table_name, key);
  auto reseal = [&](std::string_view sealed) -> Result<std::string> {
    auto plain = from.open(sealed, ad);
    if (!plain) {
      return Error::make(ErrorCode::kInternal,
                         "record '" + printable(key) + "' of table " + std::string(table_name) +
                             " does not open: " + plain.error().message);
    }
    return to.seal(plain->view(), ad);
  };
  if (table_name == table::kSecrets) {
    auto secret = decodeSecret(key, value);
    if (!secret) return secret.takeError();
    auto sealed = reseal(secret->sealed);
    if (!sealed) return sealed;
    return encodeSecret(secret->updated_unix, *sealed);
  }
  if (table_name == table::kBosaUsers) {
    auto user = decodeBosaUser(key, value);
    if (!user) return user.takeError();
    auto sealed = reseal(user->sealed_secret);
    if (!sealed) return sealed;
    user->sealed_secret = std::move(sealed).value();
    return encodeBosaUser(*user);
  }
  if (table_name == table::kUserTokens) {
    auto token = decodeUserToken(key, value);
    if (!token) return token.takeError();
    auto sealed = reseal(token->sealed_token);
    if (!sealed) return sealed;
    token->sealed_token = std::move(sealed).value();
    return encodeUserToken(*token);
  }
  auto valid = decodeRecord(table_name, key, value);
  if (!valid) return valid.takeError();
  return std::string(value);
}

Result<StoreCounts> countRecords(const LmdbTxn& txn, const CredentialDbis& dbis) {
  StoreCounts counts;
  const std::pair<MDB_dbi, size_t*> kinds[] = {{dbis.teams, &counts.teams},
                                               {dbis.clients, &counts.clients},
                                               {dbis.secrets, &counts.secrets},
                                               {dbis.bosa_users, &counts.bosa_users}};
  for (const auto& [dbi, out] : kinds) {
    auto n = txn.count(dbi);
    if (!n) return n.takeError();
    *out = *n;
  }
  return counts;
}

// The credential environment of `state_dir` with any interrupted rekey settled. `must_exist`:
// an absent store is an error saying to run init (rather than an empty store created here).
Result<CredentialEnv> openSettled(const std::string& state_dir, const std::string& key_file,
                                  bool must_exist) {
  if (state_dir.empty()) return Error::make(ErrorCode::kInternal, "no state directory configured");
  const std::string env_path = credentialEnvPath(state_dir);
  if (must_exist && !pathExists(env_path + "/data.mdb")) {
    return Error::make(ErrorCode::kInternal, "no credential store at " + env_path +
                                                 "; create it with `keywayctl init` (or check "
                                                 "--config and state_dir)");
  }
  auto env = openCredentialEnv(state_dir);
  if (!env) return env.takeError();
  auto settled = settleKeyFiles(*env, key_file);
  if (!settled) return settled.takeError();
  return env;
}

// The keyring of `txn`'s snapshot from `key_file`; a store without meta records is not
// initialised.
Result<std::shared_ptr<const Keyring>> storeKeyring(const CredentialEnv& env, const LmdbTxn& txn,
                                                    const std::string& key_file) {
  auto info = readKeyInfo(txn, env.dbis);
  if (!info) return info.takeError();
  if (!info->key_check) {
    return Error::make(ErrorCode::kInternal, "the credential store " + env.env->path() +
                                                 " is not initialised; run `keywayctl init`");
  }
  StoreKeyrings keyrings(key_file, env.env->path());
  return keyrings.forSnapshot(txn, env.dbis, /*live=*/false);
}

// Every record of the snapshot in backup form, minted user tokens left out.
Result<Backup> snapshot(const CredentialEnv& env, const LmdbTxn& txn, const Keyring& keyring) {
  auto info = readKeyInfo(txn, env.dbis);
  if (!info) return info.takeError();
  Backup backup;
  backup.schema_version = info->schema_version.value_or(0);
  backup.key_id = keyring.keyId();
  // A write transaction's id is the one it would commit as; what it sees is the one before.
  backup.generation = mdb_txn_id(txn.raw()) - (txn.readOnly() ? 0 : 1);
  backup.created_unix = static_cast<int64_t>(::time(nullptr));
  for (const CredentialTable& t : env.tables()) {
    if (t.name == table::kUserTokens) continue;
    auto status = txn.forEach(t.dbi, {}, [&](std::string_view k, std::string_view v) {
      backup.records.push_back(BackupRecord{std::string(t.name), std::string(k), std::string(v)});
      return true;
    });
    if (!status) return status.takeError();
  }
  return backup;
}

MDB_dbi dbiOf(const CredentialEnv& env, std::string_view name) {
  for (const CredentialTable& t : env.tables()) {
    if (t.name == name) return t.dbi;
  }
  return env.dbis.meta;  // unreachable: decodeBackup accepts known tables only
}

Error rekeyKeyFileError(const Error& error) {
  return Error::make(
      error.code,
      "rekey replaces the master key file, so its directory must be writable: " + error.message +
          ". If keywayd takes its key through systemd's LoadCredential=, run keywayctl with "
          "CREDENTIALS_DIRECTORY set to the directory the credential is loaded from (e.g. "
          "/etc/keyway), not the service's own. Nothing was changed.");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// rekey

Result<RekeyReport> rekeyCredentialStore(const std::string& state_dir, const std::string& key_file,
                                         const std::function<void(RekeyStep)>& after_step) {
  auto step = [&](RekeyStep s) {
    if (after_step) after_step(s);
  };
  // The new key file is created by this process: owned by another user than the old one, it
  // would be a key keywayd cannot read (e.g. `sudo keywayctl rekey` on a key the daemon's user owns).
  struct stat key_stat {};
  if (::stat(key_file.c_str(), &key_stat) == 0 && key_stat.st_uid != ::geteuid()) {
    return Error::make(ErrorCode::kBadRequest,
                       key_file + " is owned by uid " + std::to_string(key_stat.st_uid) +
                           ", not by this user (uid " + std::to_string(::geteuid()) +
                           "): run rekey as the key file's owner (the user keywayd runs as), so "
                           "that the new key stays readable to keywayd. Nothing was changed.");
  }
  auto env = openSettled(state_dir, key_file, /*must_exist=*/true);
  if (!env) return env.takeError();
  // One rekey at a time, from before the write lock until the new key file is in place. LMDB's
  // write lock alone ends at the commit: a second rekey taking it then would settle this one's
  // next key into place and write its own, and this one's rename would then put a key no commit
  // used over the key the store is sealed under.
  auto rekey_lock = FileLock::acquire(key_file + ".lock");
  if (!rekey_lock) return rekeyKeyFileError(rekey_lock.error());
  // The write lock from here to the commit: no other writer (another rekey, a restore, the
  // daemon minting a token) runs between the check of the key and the commit.
  auto txn = env->env->beginWrite();
  if (!txn) return txn.takeError();
  // Another rekey may have stopped between our open and the lock.
  auto settled = settleKeyFilesLocked(*txn, env->dbis, key_file);
  if (!settled) return settled.takeError();
  auto old = storeKeyring(*env, *txn, key_file);
  if (!old) return old.takeError();
  auto master = MasterKey::random();
  if (!master) return master.takeError();
  auto fresh = Keyring::create(*master, **old);  // hashing subkeys carried over
  if (!fresh) return fresh.takeError();

  RekeyReport report;
  report.old_key_id = shortKeyId((*old)->keyId());
  report.new_key_id = shortKeyId(fresh->keyId());
  const std::string next = nextMasterKeyFile(key_file);
  auto written = writeMasterKeyFile(next, *master);
  if (!written) return rekeyKeyFileError(written.error());
  step(RekeyStep::kNextKeyWritten);

  // Before the commit, a failure leaves the store as it was: the next key is then removed.
  auto abandon = [&](Error error) -> Error {
    txn->abort();
    if (::unlink(next.c_str()) == 0) (void)fsyncDirectory(parentDirectory(next));
    return error;
  };
  for (const CredentialTable& t : env->tables()) {
    size_t* counter = t.name == table::kSecrets      ? &report.secrets
                      : t.name == table::kBosaUsers  ? &report.bosa_users
                      : t.name == table::kUserTokens ? &report.user_tokens
                                                     : nullptr;
    if (counter == nullptr) continue;
    // Collected first: writing while a cursor walks the same database could skip or revisit.
    std::vector<std::pair<std::string, std::string>> records;
    auto scanned = txn->forEach(t.dbi, {}, [&](std::string_view k, std::string_view v) {
      records.emplace_back(std::string(k), std::string(v));
      return true;
    });
    if (!scanned) return abandon(scanned.takeError());
    for (const auto& [k, v] : records) {
      auto resealed = resealRecord(t.name, k, v, **old, *fresh);
      if (!resealed) return abandon(resealed.takeError());
      auto put = txn->put(t.dbi, k, *resealed);
      if (!put) return abandon(put.takeError());
      ++*counter;
    }
  }
  auto keys = writeKeyRecords(*txn, env->dbis, *fresh);
  if (!keys) return abandon(keys.takeError());
  step(RekeyStep::kResealed);

  auto committed = txn->commit();
  if (!committed) {
    // Whether a failed commit reached the disk is the store's to say: settle by its key check.
    auto resettled = settleKeyFiles(*env, key_file);
    if (!resettled) return resettled.takeError();
    return committed.takeError();
  }
  step(RekeyStep::kCommitted);
  report.generation = env->env->lastTxnId();

  if (::rename(next.c_str(), key_file.c_str()) != 0) {
    const int saved = errno;
    // ENOENT: another keywayctl or keywayd opened the store after our commit and finished the
    // rename (settleKeyFiles). Anything else: the next open finishes it; say how to do it now.
    if (saved != ENOENT) {
      return errnoError(ErrorCode::kInternal,
                        "the store is re-sealed under the new key in " + next + ", but it could "
                        "not be renamed to " + key_file + " (the next keywayctl or keywayd run "
                        "does it; or run `mv " + next + " " + key_file + "`): rename",
                        next, saved);
    }
  }
  auto synced = fsyncDirectory(parentDirectory(key_file));
  if (!synced) return synced.takeError();
  step(RekeyStep::kRenamed);
  return report;
}

// ---------------------------------------------------------------------------------------------
// backup

Result<BackupReport> backupCredentialStore(const std::string& state_dir,
                                           const std::string& key_file, const std::string& path,
                                           bool replace) {
  if (!replace && pathExists(path)) {
    return Error::make(ErrorCode::kBadRequest,
                       path + " already exists; pick another file or pass --force to replace it");
  }
  auto env = openSettled(state_dir, key_file, /*must_exist=*/true);
  if (!env) return env.takeError();
  auto txn = env->env->beginRead();
  if (!txn) return txn.takeError();
  auto keyring = storeKeyring(*env, *txn, key_file);
  if (!keyring) return keyring.takeError();
  auto backup = snapshot(*env, *txn, **keyring);
  if (!backup) return backup.takeError();
  auto counts = countRecords(*txn, env->dbis);
  if (!counts) return counts.takeError();
  txn->abort();  // the snapshot is copied: release the reader slot before the file I/O

  const std::string bytes = encodeBackup(*backup, **keyring);
  auto written = writeFileAtomically(path, bytes, replace);
  if (!written) {
    if (written.error().code == ErrorCode::kBadRequest) {
      return Error::make(ErrorCode::kBadRequest, path + " already exists; pick another file or "
                                                        "pass --force to replace it");
    }
    return written.takeError();
  }
  BackupReport report;
  report.bytes = bytes.size();
  report.generation = backup->generation;
  report.key_id = shortKeyId(backup->key_id);
  report.counts = *counts;
  return report;
}

// ---------------------------------------------------------------------------------------------
// restore

namespace {

std::string savedCopyPath(std::string dir, uint64_t generation) {
  const time_t now = ::time(nullptr);
  struct tm tm {};
  char stamp[32] = "unknown-time";
  if (gmtime_r(&now, &tm) != nullptr) strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  if (!dir.empty() && dir.back() != '/') dir += '/';
  return dir + "credentials-replaced-" + stamp + "-g" + std::to_string(generation) + ".backup";
}

// The backup checked against the key it claims and the records' own rules, and the keyring that
// opens it (hashing subkeys included). kBadRequest for everything wrong with the file.
Result<Keyring> verifyBackup(const Backup& backup, std::string_view bytes, const MasterKey& key,
                             const std::string& key_source) {
  auto sealing = Keyring::create(key);
  if (!sealing) return sealing.takeError();
  if (backup.key_id != sealing->keyId()) {
    return Error::make(ErrorCode::kBadRequest,
                       "the backup is sealed under another master key (backup: key id " +
                           shortKeyId(backup.key_id) + "; " + key_source + ": key id " +
                           shortKeyId(sealing->keyId()) +
                           "); nothing was changed. If it was taken before a rekey, pass the "
                           "master key file it was taken with: --key-file FILE");
  }
  if (!backupAuthentic(bytes, *sealing)) {
    return Error::make(ErrorCode::kBadRequest,
                       "the backup fails its integrity check (damaged or altered since it was "
                       "written); nothing was changed");
  }
  if (backup.schema_version != kSchemaVersion) {
    return Error::make(ErrorCode::kBadRequest,
                       "the backup holds schema version " +
                           std::to_string(backup.schema_version) + "; this keyway supports " +
                           std::to_string(kSchemaVersion) + "; nothing was changed");
  }
  StoreKeyInfo info;
  for (size_t i = 0; i < backup.records.size(); ++i) {
    const BackupRecord& r = backup.records[i];
    auto valid = decodeRecord(r.table, r.key, r.value);
    if (!valid) {
      return Error::make(ErrorCode::kBadRequest, "record " + std::to_string(i + 1) +
                                                     " of the backup is malformed: " +
                                                     valid.error().message);
    }
    if (r.table != table::kMeta) continue;
    if (r.key == kMetaKeyCheck) info.key_check = decodeKeyCheck(r.value).value();
    if (r.key == kMetaHashKeys) info.hash_keys = decodeHashKeys(r.value).value();
  }
  if (!info.key_check) {
    return Error::make(ErrorCode::kBadRequest, "the backup has no key-check record");
  }
  auto keyring = keyringFor(info, key);
  if (!keyring) return Error::make(ErrorCode::kBadRequest, "the backup is damaged: " + keyring.error().message);
  if (!*keyring) {
    return Error::make(ErrorCode::kBadRequest,
                       "the backup's key-check record does not open under its master key");
  }
  return std::move(**keyring);
}

}  // namespace

Result<RestoreReport> restoreCredentialStore(const std::string& state_dir,
                                             const std::string& key_file, const std::string& path,
                                             const RestoreOptions& options) {
  auto bytes = readWholeFile(path, kMaxBackupBytes);
  if (!bytes) return bytes.takeError();
  auto backup = decodeBackup(*bytes);
  if (!backup) return backup.takeError();
  auto env = openSettled(state_dir, key_file, /*must_exist=*/false);
  if (!env) return env.takeError();
  auto store_key = loadMasterKeyFile(key_file);
  if (!store_key) {
    return Error::make(store_key.error().code,
                       "restore seals the records under the store's master key, which must be in "
                       "place first (the key the backup was taken with, or the store's own): " +
                           store_key.error().message);
  }
  std::optional<MasterKey> other_key;
  if (!options.backup_key_file.empty()) {
    auto loaded = loadMasterKeyFile(options.backup_key_file);
    if (!loaded) return Error::make(ErrorCode::kBadRequest, loaded.error().message);
    other_key = std::move(loaded).value();
  }
  const MasterKey& backup_key = other_key ? *other_key : *store_key;
  auto from = verifyBackup(*backup, *bytes, backup_key,
                           other_key ? "--key-file " + options.backup_key_file
                                     : "this store's key file " + key_file);
  if (!from) return from.takeError();
  // Sealed under the store's key with the backup's hashing subkeys (its client token hashes).
  auto to = Keyring::create(*store_key, *from);
  if (!to) return to.takeError();
  // Everything re-sealed before the write lock is taken: the lock is held for the writes only.
  std::vector<std::pair<const BackupRecord*, std::string>> records;
  records.reserve(backup->records.size());
  for (const BackupRecord& r : backup->records) {
    if (r.table == table::kMeta || r.table == table::kUserTokens) continue;
    auto value = resealRecord(r.table, r.key, r.value, *from, *to);
    if (!value) {
      return Error::make(ErrorCode::kBadRequest, "the backup is damaged: " + value.error().message);
    }
    records.emplace_back(&r, std::move(value).value());
  }

  RestoreReport report;
  report.backup_generation = backup->generation;
  report.backup_created_unix = backup->created_unix;
  report.resealed = other_key.has_value() && from->keyId() != to->keyId();
  auto txn = env->env->beginWrite();
  if (!txn) return txn.takeError();
  auto settled = settleKeyFilesLocked(*txn, env->dbis, key_file);
  if (!settled) return settled.takeError();
  auto live = readKeyInfo(*txn, env->dbis);
  if (!live) return live.takeError();
  std::shared_ptr<const Keyring> live_keyring;
  if (live->key_check) {
    StoreKeyrings keyrings(key_file, env->env->path());
    auto ring = keyrings.forSnapshot(*txn, env->dbis, /*live=*/false, &*store_key);
    if (!ring) {
      return Error::make(ring.error().code,
                         ring.error().message + "; to restore into a store whose key is lost, move " +
                             env->env->path() + " aside first");
    }
    live_keyring = std::move(ring).value();
  }
  auto before = countRecords(*txn, env->dbis);
  if (!before) return before.takeError();
  report.before = *before;
  report.generation_before = env->env->lastTxnId();
  const bool live_has_records = before->teams + before->clients + before->secrets +
                                    before->bosa_users != 0;
  if (!options.saved_copy_dir.empty() && live_keyring && live_has_records) {
    auto current = snapshot(*env, *txn, *live_keyring);
    if (!current) return current.takeError();
    const std::string saved_path = savedCopyPath(options.saved_copy_dir, current->generation);
    auto saved = writeFileAtomically(saved_path, encodeBackup(*current, *live_keyring),
                                     /*replace=*/true);
    if (!saved) return saved.takeError();
    // Run as root (sudo keywayctl restore), the copy would be root's in a directory keywayd owns:
    // it goes to the directory's owner, like every other file there.
    struct stat dir_st {};
    if (::geteuid() == 0 && ::stat(options.saved_copy_dir.c_str(), &dir_st) == 0 &&
        ::chown(saved_path.c_str(), dir_st.st_uid, dir_st.st_gid) != 0) {
      return Error::make(ErrorCode::kInternal, "cannot give " + saved_path + " to the owner of " +
                                                   options.saved_copy_dir + ": " + std::strerror(errno));
    }
    report.saved_copy = saved_path;
  }
  for (const CredentialTable& t : env->tables()) {
    auto cleared = txn->clear(t.dbi);
    if (!cleared) return cleared.takeError();
  }
  for (const auto& [record, value] : records) {
    auto put = txn->put(dbiOf(*env, record->table), record->key, value);
    if (!put) return put.takeError();
  }
  auto version = txn->put(env->dbis.meta, kMetaSchemaVersion, encodeSchemaVersion(kSchemaVersion));
  if (!version) return version.takeError();
  auto keys = writeKeyRecords(*txn, env->dbis, *to);
  if (!keys) return keys.takeError();
  auto after = countRecords(*txn, env->dbis);
  if (!after) return after.takeError();
  report.after = *after;
  if (options.before_commit) options.before_commit();
  auto committed = txn->commit();
  if (!committed) return committed.takeError();
  report.generation_after = env->env->lastTxnId();
  return report;
}

}  // namespace keyway::storage
