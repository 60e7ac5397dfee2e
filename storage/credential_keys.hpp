// Private to storage/: the credential environment's handles, and which master key seals it.
//
// The key lives in a file (master_key_file) and the records in LMDB: two durable objects that no
// single write can change together. `keywayctl rekey` therefore writes the next key beside the
// file first (<key file>.next: 0600, fsync'ed with its directory), then re-seals every record
// under it in one LMDB transaction (whose meta records name the new key), then renames the next
// file over the key file. The store's own key-check record says which of the two files holds its
// key, so whoever opens the store after a crash at any point completes the rename (the records
// are sealed under the next key) or removes the next file (they are not): settleKeyFiles().
// A keyring is looked up per snapshot (StoreKeyrings), so a running keywayd that sees the
// re-sealed records also loads the key they need, from the next file or the renamed one.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "storage/crypto.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/table_records.hpp"
#include "storage/warning.hpp"

namespace keyway::storage {

struct CredentialDbis {
  MDB_dbi teams, clients, client_tokens, secrets, bosa_users, user_tokens, meta;
};

// A named database of the credential environment: its name (the associated data of its sealed
// fields begins with it) and its handle.
struct CredentialTable {
  std::string_view name;
  MDB_dbi dbi;
};

struct CredentialEnv {
  std::shared_ptr<LmdbEnv> env;
  CredentialDbis dbis{};
  // Every table, in the layout's order (lmdb_credential_store.hpp).
  std::vector<CredentialTable> tables() const;
};

// The handle of a record table.
MDB_dbi credentialDbi(const CredentialDbis& dbis, RecordTable table);

// Opens <state_dir>/credentials and its named databases, creating what is absent.
core::Result<CredentialEnv> openCredentialEnv(const std::string& state_dir);

// What a snapshot's meta records say about its key; empty optionals for absent records.
struct StoreKeyInfo {
  std::optional<uint32_t> schema_version;
  std::optional<std::string> key_check;      // the sealed check value
  std::optional<std::string> key_check_raw;  // the record as stored: identifies a keyring
  std::optional<std::string> key_id;         // Keyring::keyId of the sealing key (init, rekey, restore)
  std::optional<std::string> hash_keys;      // sealed hashing subkeys (init, rekey, restore)
};
// kInternal for a damaged meta record.
core::Result<StoreKeyInfo> readKeyInfo(const LmdbTxn& txn, const CredentialDbis& dbis);

// The keyring that reads a snapshot described by `info`, made from `master`: its sealing subkeys
// from `master`, its hashing ones from info.hash_keys when present. nullopt when the key check
// does not open under `master` (another key); kInternal when `info` has no key check.
core::Result<std::optional<Keyring>> keyringFor(const StoreKeyInfo& info, const MasterKey& master);

// The meta records that name the keyring's key: key_check (sealed anew), key_id, hash_keys.
core::Status writeKeyRecords(LmdbTxn& txn, const CredentialDbis& dbis, const Keyring& keyring);

// The first 8 bytes of a key id in hex, as reports show it; describeKeyId: "key id " and that.
std::string shortKeyId(std::string_view key_id);
std::string describeKeyId(std::string_view key_id);

// Completes or rolls back a rekey that stopped between writing <key_file>.next and renaming it
// (see the top of this file); does nothing when there is no next file. Takes the LMDB write lock
// for the decision, so it never races a rekey in progress. Errors (kInternal) when the files
// cannot be renamed or removed, or when neither holds the store's key.
core::Status settleKeyFiles(const CredentialEnv& env, const std::string& key_file);
// The same inside the caller's write transaction (which it does not commit or abort).
core::Status settleKeyFilesLocked(const LmdbTxn& write_txn, const CredentialDbis& dbis,
                                  const std::string& key_file);

// The keyrings of one credential store, per snapshot: the one whose key opens the snapshot's key
// check. Loaded from the key file (or the next file of a rekey in progress) the first time a
// snapshot needs it, then remembered by the key-check record that identifies it. Thread-safe.
class StoreKeyrings {
 public:
  StoreKeyrings(std::string key_file, std::string env_path)
      : key_file_(std::move(key_file)), env_path_(std::move(env_path)), warn_limiter_(kWarnPeriodMs) {}
  static constexpr int64_t kWarnPeriodMs = 10000;

  // The keyring for `txn`'s snapshot, `seed` (the key already loaded, if any) tried first.
  // Errors: kInternal "master key does not match" (or damaged meta records) while opening;
  // `live` true (a store already open): kUnavailable, at most one file read a second, and a
  // warning on stderr at most every 10 s, since a running keywayd cannot fix its key file.
  core::Result<std::shared_ptr<const Keyring>> forSnapshot(const LmdbTxn& txn,
                                                           const CredentialDbis& dbis, bool live,
                                                           const MasterKey* seed = nullptr);
  // The keyring of the newest snapshot seen (for fingerprints outside a unit). Null before the
  // first forSnapshot.
  std::shared_ptr<const Keyring> latest() const;

 private:
  core::Result<std::shared_ptr<const Keyring>> load(const StoreKeyInfo& info, bool live,
                                                    const MasterKey* seed);

  const std::string key_file_;
  const std::string env_path_;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<const Keyring>> by_check_;  // key-check record -> keyring
  std::shared_ptr<const Keyring> latest_;
  std::string latest_check_;
  uint64_t latest_txn_id_ = 0;
  std::string failed_check_;  // the key check no key file matched, when, and what was said
  std::chrono::steady_clock::time_point failed_at_{};
  core::Error failed_error_;
  WarnLimiter warn_limiter_;
};

}  // namespace keyway::storage
