// The credential environment's handles, its key records, the settling of an interrupted rekey,
// and the per-snapshot keyrings of a store that may be re-keyed while open.
#include "storage/credential_keys.hpp"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include <cstdlib>
#include <iterator>

#include "storage/file_util.hpp"
#include "storage/lmdb_credential_store.hpp"
#include "storage/master_key.hpp"
#include "storage/record_codec.hpp"
#include "storage/warning.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

MDB_dbi credentialDbi(const CredentialDbis& dbis, RecordTable table) {
  switch (table) {
    case RecordTable::kTeams: return dbis.teams;
    case RecordTable::kClients: return dbis.clients;
    case RecordTable::kClientTokens: return dbis.client_tokens;
    case RecordTable::kSecrets: return dbis.secrets;
    case RecordTable::kBosaUsers: return dbis.bosa_users;
    case RecordTable::kUserTokens: return dbis.user_tokens;
  }
  return dbis.meta;
}

static_assert(kKeyIdSize == kKeyIdBytes, "record_codec and crypto agree on the key id's size");

namespace {

// How long a live store that found no key for a snapshot waits before reading the files again,
// and how often it says so on stderr.
constexpr auto kRetryLoadAfter = std::chrono::seconds(1);
// Keyrings remembered besides the newest: a read that began before a rekey committed still
// needs the old one; more than a few means keys changed faster than anyone reads.
constexpr size_t kMaxKeyrings = 4;

int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::vector<CredentialTable> CredentialEnv::tables() const {
  return {{table::kTeams, dbis.teams},         {table::kClients, dbis.clients},
          {table::kClientTokens, dbis.client_tokens}, {table::kSecrets, dbis.secrets},
          {table::kBosaUsers, dbis.bosa_users}, {table::kUserTokens, dbis.user_tokens},
          {table::kMeta, dbis.meta}};
}

Result<CredentialEnv> openCredentialEnv(const std::string& state_dir) {
  if (state_dir.empty()) return Error::make(ErrorCode::kInternal, "no state directory configured");
  auto dir = ensurePrivateDirectory(state_dir);
  if (!dir) return dir.takeError();
  auto env = LmdbEnv::open(credentialEnvPath(state_dir));
  if (!env) return env.takeError();
  auto dbis = (*env)->openDbis({std::string(table::kTeams), std::string(table::kClients),
                                std::string(table::kClientTokens), std::string(table::kSecrets),
                                std::string(table::kBosaUsers), std::string(table::kUserTokens),
                                std::string(table::kMeta)});
  if (!dbis) return dbis.takeError();
  const auto& d = *dbis;
  return CredentialEnv{std::move(env).value(), CredentialDbis{d[0], d[1], d[2], d[3], d[4], d[5], d[6]}};
}

Result<StoreKeyInfo> readKeyInfo(const LmdbTxn& txn, const CredentialDbis& dbis) {
  StoreKeyInfo info;
  // Decodes the meta record `key` into `out` when present; raw (if given) keeps its bytes.
  auto read = [&](std::string_view key, auto decode, auto& out,
                  std::optional<std::string>* raw = nullptr) -> Status {
    auto value = txn.get(dbis.meta, key);
    if (!value) return value.takeError();
    if (!*value) return core::okStatus();
    auto decoded = decode(**value);
    if (!decoded) return decoded.takeError();
    out = std::move(decoded).value();
    if (raw != nullptr) *raw = std::string(**value);
    return core::okStatus();
  };
  Status status = read(kMetaSchemaVersion, decodeSchemaVersion, info.schema_version);
  if (status) status = read(kMetaKeyCheck, decodeKeyCheck, info.key_check, &info.key_check_raw);
  if (status) status = read(kMetaKeyId, decodeKeyId, info.key_id);
  if (status) status = read(kMetaHashKeys, decodeHashKeys, info.hash_keys);
  if (!status) return status.takeError();
  return info;
}

Result<std::optional<Keyring>> keyringFor(const StoreKeyInfo& info, const MasterKey& master) {
  using Out = std::optional<Keyring>;
  if (!info.key_check) {
    return Error::make(ErrorCode::kInternal, "the credential store has no key-check record");
  }
  auto sealing = Keyring::create(master);
  if (!sealing) return sealing.takeError();
  auto opened = sealing->open(*info.key_check, associatedData(table::kMeta, kMetaKeyCheck));
  if (!opened || !core::constantTimeEquals(opened->view(), kKeyCheckPlaintext)) return Out();
  if (!info.hash_keys) return Out(std::move(sealing).value());
  auto full = Keyring::create(master, *info.hash_keys, associatedData(table::kMeta, kMetaHashKeys));
  if (!full) {
    return Error::make(ErrorCode::kInternal,
                       "the credential store's hashing keys do not open under the master key "
                       "that opens its key check: the store is damaged; restore it from backup");
  }
  return Out(std::move(full).value());
}

Status writeKeyRecords(LmdbTxn& txn, const CredentialDbis& dbis, const Keyring& keyring) {
  auto status = txn.put(dbis.meta, kMetaKeyCheck,
                        encodeKeyCheck(keyring.seal(kKeyCheckPlaintext,
                                                    associatedData(table::kMeta, kMetaKeyCheck))));
  if (!status) return status;
  status = txn.put(dbis.meta, kMetaKeyId, encodeKeyId(keyring.keyId()));
  if (!status) return status;
  return txn.put(dbis.meta, kMetaHashKeys,
                 encodeHashKeys(keyring.sealHashKeys(associatedData(table::kMeta, kMetaHashKeys))));
}

std::string shortKeyId(std::string_view key_id) { return hexEncode(key_id.substr(0, 8)); }

std::string describeKeyId(std::string_view key_id) { return "key id " + shortKeyId(key_id); }

Status settleKeyFilesLocked(const LmdbTxn& write_txn, const CredentialDbis& dbis,
                            const std::string& key_file) {
  const std::string next = nextMasterKeyFile(key_file);
  if (!pathExists(next)) return core::okStatus();
  auto info = readKeyInfo(write_txn, dbis);
  if (!info) return info.takeError();
  // Whether `file` holds the key that opens the store's key check. A file that cannot be loaded
  // (absent, or a next file cut short by a crash) holds no key.
  auto opens = [&](const std::string& file) -> Result<bool> {
    if (!info->key_check) return false;
    auto key = loadMasterKeyFile(file);
    if (!key) return false;
    auto ring = keyringFor(*info, *key);
    if (!ring) return ring.takeError();
    return ring->has_value();
  };
  const std::string dir = parentDirectory(key_file);
  auto current = opens(key_file);
  if (!current) return current.takeError();
  if (*current || !info->key_check) {
    // The rekey that wrote the next file never committed: that key seals nothing. Roll back.
    if (::unlink(next.c_str()) != 0 && errno != ENOENT) {
      return errnoError(ErrorCode::kInternal,
                        "an interrupted `keywayctl rekey` left an unused next master key; remove "
                        "it (the store is sealed under " + key_file + "): cannot remove",
                        next, errno);
    }
    return fsyncDirectory(dir);
  }
  auto upcoming = opens(next);
  if (!upcoming) return upcoming.takeError();
  if (*upcoming) {
    // The records were re-sealed under the next key before the rekey stopped: complete it.
    if (::rename(next.c_str(), key_file.c_str()) != 0) {
      return errnoError(ErrorCode::kInternal,
                        "an interrupted `keywayctl rekey` re-sealed the store under " + next +
                            "; move it over " + key_file + " (mv " + next + " " + key_file +
                            "): cannot rename",
                        next, errno);
    }
    return fsyncDirectory(dir);
  }
  return Error::make(ErrorCode::kInternal,
                     "neither " + key_file + " nor " + next +
                         " holds the master key of this credential store" +
                         (info->key_id ? " (" + describeKeyId(*info->key_id) + ")" : std::string()) +
                         "; put the key file the store was last re-keyed with in place");
}

Status settleKeyFiles(const CredentialEnv& env, const std::string& key_file) {
  if (!pathExists(nextMasterKeyFile(key_file))) return core::okStatus();
  auto txn = env.env->beginWrite();  // waits for a rekey in progress to commit or abort
  if (!txn) return txn.takeError();
  return settleKeyFilesLocked(*txn, env.dbis, key_file);  // nothing written: aborted on return
}

// ---------------------------------------------------------------------------------------------
// StoreKeyrings

Result<std::shared_ptr<const Keyring>> StoreKeyrings::forSnapshot(const LmdbTxn& txn,
                                                                  const CredentialDbis& dbis,
                                                                  bool live,
                                                                  const MasterKey* seed) {
  auto raw = txn.get(dbis.meta, kMetaKeyCheck);
  if (!raw) return raw.takeError();
  if (!*raw) {
    return Error::make(ErrorCode::kInternal,
                       "credential store " + env_path_ +
                           " has no key-check record (damaged); restore it from backup");
  }
  const std::string_view check = **raw;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (latest_ && check == latest_check_) return latest_;
    auto it = by_check_.find(std::string(check));
    if (it != by_check_.end()) return it->second;
  }
  auto info = readKeyInfo(txn, dbis);
  if (!info) return info.takeError();
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = by_check_.find(std::string(check));
  if (it != by_check_.end()) return it->second;
  auto ring = load(*info, live, seed);
  if (!ring) return ring;
  // The newest snapshot's keyring becomes `latest`: a read transaction begun before a commit
  // (older key check) does not take it back.
  const uint64_t txn_id = mdb_txn_id(txn.raw());
  if (!latest_ || txn_id >= latest_txn_id_) {
    latest_ = *ring;
    latest_check_ = std::string(check);
    latest_txn_id_ = txn_id;
  }
  if (by_check_.size() >= kMaxKeyrings) {
    for (auto e = by_check_.begin(); e != by_check_.end();) {
      e = e->first == latest_check_ ? std::next(e) : by_check_.erase(e);
    }
  }
  by_check_.emplace(std::string(check), *ring);
  return ring;
}

std::shared_ptr<const Keyring> StoreKeyrings::latest() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return latest_;
}

Result<std::shared_ptr<const Keyring>> StoreKeyrings::load(const StoreKeyInfo& info, bool live,
                                                           const MasterKey* seed) {
  const auto now = std::chrono::steady_clock::now();
  if (live && info.key_check_raw == failed_check_ && now - failed_at_ < kRetryLoadAfter) {
    return failed_error_;
  }
  // The key file, then the next file of a rekey that committed but has not renamed it yet, then
  // the key file again (the rekey may have renamed it between the two reads).
  const std::string next = nextMasterKeyFile(key_file_);
  std::optional<std::string> file_key_id;
  std::string file_problem;
  auto attempt = [&](const MasterKey& key) -> Result<std::shared_ptr<const Keyring>> {
    auto ring = keyringFor(info, key);
    if (!ring) return ring.takeError();
    if (!*ring) return std::shared_ptr<const Keyring>();
    return std::make_shared<const Keyring>(std::move(**ring));
  };
  if (seed != nullptr) {
    auto ring = attempt(*seed);
    if (!ring || *ring) return ring;
  }
  const std::string* const files[] = {&key_file_, &next, &key_file_};
  for (const std::string* file : files) {
    auto key = loadMasterKeyFile(*file);
    if (!key) {
      if (file == &key_file_) file_problem = key.error().message;
      continue;
    }
    auto ring = attempt(*key);
    if (!ring || *ring) return ring;
    if (file == &key_file_ && !file_key_id) {
      if (auto other = Keyring::create(*key)) file_key_id = other->keyId();
    }
  }
  std::string message = "master key does not match this state directory (" + env_path_ + "): ";
  if (info.key_id) message += "the store is sealed under " + describeKeyId(*info.key_id) + ", ";
  message += file_key_id ? key_file_ + " holds " + describeKeyId(*file_key_id)
                         : "no key could be read (" + file_problem + ")";
  if (!live) {
    message += "; use the key file the store was initialised or last re-keyed with";
    // Under systemd's LoadCredential= keywayd sees a copy of the key file only, never the next
    // key an interrupted `keywayctl rekey` left beside the original.
    if (const char* creds = std::getenv("CREDENTIALS_DIRECTORY");
        creds != nullptr && *creds != '\0' && key_file_.rfind(creds, 0) == 0) {
      message += "; if a keywayctl rekey was interrupted, run any keywayctl command as root (e.g. "
                 "`keywayctl status`: it finishes the rekey) and restart keyway";
    }
    return Error::make(ErrorCode::kInternal, message);
  }
  message += "; the store was re-keyed while keywayd ran and keywayd cannot read the new key: if "
             "it reads its key through systemd's LoadCredential= (a copy made at start), restart "
             "it (systemctl restart keyway)";
  failed_check_ = info.key_check_raw.value_or("");
  failed_at_ = now;
  failed_error_ = Error::make(ErrorCode::kUnavailable, message);
  if (warn_limiter_.allow(steadyMs())) warnOnStderr("credential_store", message);
  return failed_error_;
}

}  // namespace keyway::storage
