// Whole-store operations on the LMDB credential store, for keywayctl: master key rotation
// (rekey), backup and restore. Each runs next to a keywayd using the same store: what it changes
// is one LMDB write transaction, which the daemon sees at its next unit (generation and key check
// move), and a crash at any point leaves the old state or the new one (docs/operations.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "core/result.hpp"

namespace keyway::storage {

// Records by kind, as keywayctl reports them.
struct StoreCounts {
  size_t teams = 0;
  size_t clients = 0;
  size_t secrets = 0;
  size_t bosa_users = 0;
};

// The steps of a rekey, in order (the protocol is described in storage/credential_keys.hpp).
enum class RekeyStep {
  kNextKeyWritten,  // <key file>.next written and fsync'ed; nothing re-sealed yet
  kResealed,        // every record re-sealed in the open write transaction, not committed
  kCommitted,       // the store is sealed under the next key; the key file is still the old one
  kRenamed,         // the next key file renamed over the key file
};

struct RekeyReport {
  std::string old_key_id;  // the first 8 bytes of Keyring::keyId, in hex
  std::string new_key_id;
  size_t secrets = 0;  // sealed records re-sealed, by table
  size_t bosa_users = 0;
  size_t user_tokens = 0;
  uint64_t generation = 0;  // the store's generation after the commit
};

// Seals the store of `state_dir` under a fresh random master key and replaces `key_file` with
// it, in the order that survives a crash at any point. `key_file` must be the store's key and its
// directory writable (with systemd credentials: the directory LoadCredential= reads, not
// $CREDENTIALS_DIRECTORY of the service). Client tokens stay valid and cache identities equal: the
// hashing subkeys are carried over. `after_step` (tests) is called after each step.
// Errors: kInternal/kUnavailable naming the path and what to do; nothing changes unless the commit
// happened, and a failure after it says how to finish (the next open finishes it anyway).
core::Result<RekeyReport> rekeyCredentialStore(
    const std::string& state_dir, const std::string& key_file,
    const std::function<void(RekeyStep)>& after_step = nullptr);

struct BackupReport {
  uint64_t bytes = 0;
  uint64_t generation = 0;  // of the snapshot copied
  std::string key_id;       // the first 8 bytes of Keyring::keyId, in hex
  StoreCounts counts;
};

// Writes every record of one snapshot of the store (a read transaction: consistent while keywayd
// and keywayctl write) to `path` in the backup format (storage/backup_format.hpp), mode 0600,
// atomically. Minted BOSA user tokens are left out (keywayd mints new ones). `replace` false:
// an existing `path` is kept and the call fails with kBadRequest.
core::Result<BackupReport> backupCredentialStore(const std::string& state_dir,
                                                 const std::string& key_file,
                                                 const std::string& path, bool replace);

struct RestoreOptions {
  // The master key file the backup was sealed with, when it is not the store's (a backup taken
  // before a rekey); "" = the store's own key. Its records are re-sealed under the store's key.
  std::string backup_key_file;
  // The directory where to save what the restore replaces, as a backup file written before the
  // commit (credentials-replaced-<UTC time>-g<generation>.backup: the generation names what it
  // holds, so a restore retried after a crash rewrites the same content); "" = not saved. Not
  // written when the store held nothing.
  std::string saved_copy_dir;
  std::function<void()> before_commit;  // tests: called with the write transaction still open
};

struct RestoreReport {
  StoreCounts before;
  StoreCounts after;
  uint64_t generation_before = 0;
  uint64_t generation_after = 0;
  uint64_t backup_generation = 0;
  int64_t backup_created_unix = 0;
  bool resealed = false;   // the backup came from another key (RestoreOptions::backup_key_file)
  std::string saved_copy;  // the path written, or "" when nothing was saved
};

// Replaces every record of the store of `state_dir` with the backup in `path`, in one write
// transaction (a running keywayd sees the whole backup at its next unit, and the store's
// generation moves forward whatever the backup's was). The store may be empty or fresh, for a
// restore onto a new host; `key_file` must exist. Minted BOSA user tokens are dropped.
// Errors: kBadRequest for the file (missing, not a backup, damaged, truncated, another format or
// schema, sealed under another master key, failing its MAC), with nothing changed; kInternal /
// kUnavailable for the store.
core::Result<RestoreReport> restoreCredentialStore(const std::string& state_dir,
                                                   const std::string& key_file,
                                                   const std::string& path,
                                                   const RestoreOptions& options = {});

// The largest backup file restore reads (the credential environment's map size).
inline constexpr size_t kMaxBackupBytes = size_t{1} << 30;

}  // namespace keyway::storage
