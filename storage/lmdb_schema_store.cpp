// LmdbSchemaStore: BOSA discovery documents in their own durable LMDB environment.
#include "storage/lmdb_schema_store.hpp"

#include <algorithm>
#include <utility>

#include "storage/file_util.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/names.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

namespace {

constexpr char kRecordVersion = 1;
constexpr size_t kRecordHeaderBytes = 9;  // version byte + fetched_unix_ms
constexpr std::string_view kSchemasTable = "schemas";
constexpr std::string_view kMetaTable = "meta";
constexpr std::string_view kGenerationKey = "generation";
// A map-full save grows the map and is retried; a few rounds reach kMaxSchemaMapSize from any
// start a caller may pick.
constexpr int kMaxSaveAttempts = 8;

void putU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t getU64(std::string_view in) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(in[static_cast<size_t>(i)]);
  return v;
}

}  // namespace

struct LmdbSchemaStore::Env {
  std::shared_ptr<LmdbEnv> env;
  MDB_dbi schemas = 0;
  MDB_dbi meta = 0;
};

Status checkSchemasToSave(std::string_view upstream, const core::StoredSchemas& schemas) {
  auto valid = validateName("upstream", upstream);
  if (!valid) return valid;
  if (schemas.document.size() > kMaxSchemaDocumentBytes) {
    return Error::make(ErrorCode::kPayloadTooLarge,
                       "the discovery document of upstream '" + std::string(upstream) + "' is " +
                           std::to_string(schemas.document.size()) +
                           " bytes, more than the limit of " +
                           std::to_string(kMaxSchemaDocumentBytes) +
                           " bytes; it was not stored (the stored one, if any, is kept)");
  }
  return core::okStatus();
}

std::string schemaEnvPath(const std::string& state_dir) {
  return state_dir + "/" + std::string(kSchemaEnvDir);
}

std::string encodeSchemaRecord(const core::StoredSchemas& schemas) {
  std::string out;
  out.reserve(kRecordHeaderBytes + schemas.document.size());
  out.push_back(kRecordVersion);
  putU64(out, static_cast<uint64_t>(schemas.fetched_unix_ms));
  out += schemas.document;
  return out;
}

core::Result<core::StoredSchemas> decodeSchemaRecord(std::string_view upstream,
                                                     std::string_view record) {
  if (record.size() < kRecordHeaderBytes || record[0] != kRecordVersion) {
    return Error::make(ErrorCode::kInternal,
                       "the stored schemas of upstream '" + std::string(upstream) +
                           "' are damaged (unknown record format); replace them with "
                           "`keywayctl schemas refresh`");
  }
  core::StoredSchemas out;
  out.fetched_unix_ms = static_cast<int64_t>(getU64(record.substr(1, 8)));
  out.document.assign(record.substr(kRecordHeaderBytes));
  return out;
}

core::Result<std::shared_ptr<LmdbSchemaStore>> LmdbSchemaStore::open(const std::string& state_dir,
                                                               size_t map_size) {
  if (state_dir.empty()) return Error::make(ErrorCode::kInternal, "no state directory configured");
  auto dir = ensurePrivateDirectory(state_dir);
  if (!dir) return dir.takeError();
  LmdbEnvOptions options;
  options.map_size = map_size;
  options.max_dbs = 4;
  options.durable = true;  // schemas must survive a crash; writes are rare
  auto env = LmdbEnv::open(schemaEnvPath(state_dir), options);
  if (!env) return env.takeError();
  auto dbis = (*env)->openDbis({std::string(kSchemasTable), std::string(kMetaTable)});
  if (!dbis) return dbis.takeError();
  auto handles = std::make_unique<Env>(Env{std::move(env).value(), (*dbis)[0], (*dbis)[1]});
  std::shared_ptr<LmdbSchemaStore> store(new LmdbSchemaStore(std::move(handles)));
  store->last_generation_ = store->generation();
  return store;
}

LmdbSchemaStore::LmdbSchemaStore(std::unique_ptr<Env> env) : env_(std::move(env)) {}
LmdbSchemaStore::~LmdbSchemaStore() = default;

const std::string& LmdbSchemaStore::path() const { return env_->env->path(); }

core::Result<std::optional<core::StoredSchemas>> LmdbSchemaStore::load(
    std::string_view upstream) {
  auto valid = validateName("upstream", upstream);
  if (!valid) return valid.takeError();
  std::optional<core::StoredSchemas> out;
  auto status = env_->env->view([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(env_->schemas, upstream);
    if (!raw) return raw.takeError();
    if (!raw->has_value()) return core::okStatus();
    // Copied out: the view points into the map and dies with the read transaction.
    auto decoded = decodeSchemaRecord(upstream, **raw);
    if (!decoded) return decoded.takeError();
    out = std::move(decoded).value();
    return core::okStatus();
  });
  if (!status) return status.takeError();
  return out;
}

bool LmdbSchemaStore::trySave(std::string_view upstream, std::string_view record, Error* error,
                              bool* map_full) {
  *map_full = false;
  LmdbEnv& env = *env_->env;
  auto txn = env.beginWrite();
  if (!txn) {
    *error = txn.takeError();
    return false;
  }
  MDB_txn* raw = txn->raw();
  std::string_view stored;
  uint64_t generation = 0;
  int rc = rawGet(raw, env_->meta, kGenerationKey, &stored);
  if (rc == MDB_SUCCESS) {
    if (stored.size() == 8) {
      generation = getU64(stored);
    } else {
      // A damaged counter restarts from the environment's transaction id, which differs from
      // any small counter value readers may hold; they only compare for inequality.
      generation = env.lastTxnId() + (uint64_t{1} << 32);
    }
  } else if (rc != MDB_NOTFOUND) {
    *error = lmdbError(rc, "read schema generation", env.path());
    return false;
  }
  ++generation;
  std::string gen_bytes;
  putU64(gen_bytes, generation);
  // Raw calls rather than LmdbTxn::put: LMDB's own code tells a full map (grow and retry) from
  // any other failure.
  rc = rawPut(raw, env_->schemas, upstream, record);
  if (rc == MDB_SUCCESS) rc = rawPut(raw, env_->meta, kGenerationKey, gen_bytes);
  if (rc != MDB_SUCCESS) {
    *error = lmdbError(rc, "save schemas of upstream '" + std::string(upstream) + "'", env.path());
    *map_full = rc == MDB_MAP_FULL;
    return false;  // ~LmdbTxn aborts
  }
  auto committed = txn->commit();
  if (!committed) {
    *error = committed.takeError();
    return false;
  }
  last_generation_ = generation;
  return true;
}

Status LmdbSchemaStore::save(std::string_view upstream, const core::StoredSchemas& schemas) {
  auto valid = checkSchemasToSave(upstream, schemas);
  if (!valid) return valid;
  const std::string record = encodeSchemaRecord(schemas);
  Error error;
  for (int attempt = 0; attempt < kMaxSaveAttempts; ++attempt) {
    bool map_full = false;
    if (trySave(upstream, record, &error, &map_full)) return core::okStatus();
    if (!map_full) return error;
    MDB_envinfo info{};
    if (mdb_env_info(env_->env->raw(), &info) != MDB_SUCCESS) return error;
    if (info.me_mapsize >= kMaxSchemaMapSize) return error;
    // Rare and large writes: doubling the (sparse) map is cheaper than failing a refresh. Other
    // processes adopt the new size on their next transaction (MDB_MAP_RESIZED in LmdbEnv).
    const size_t next = std::min(kMaxSchemaMapSize, std::max(info.me_mapsize * 2,
                                                             info.me_mapsize + 2 * record.size()));
    auto grown = env_->env->setMapSize(next);
    if (!grown) return grown;
  }
  return error;
}

uint64_t LmdbSchemaStore::generation() {
  uint64_t value = last_generation_.load();
  auto status = env_->env->view([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(env_->meta, kGenerationKey);
    if (!raw) return raw.takeError();
    if (!raw->has_value()) {
      value = 0;
    } else if ((*raw)->size() == 8) {
      value = getU64(**raw);
    }  // else damaged: keep the last value seen (the next save rewrites it)
    return core::okStatus();
  });
  // A failed read is neither logged nor counted: the schema store has no warn callback or
  // stats, and the same failure reaches the caller as load()'s Error.
  if (status) last_generation_ = value;
  return value;
}

}  // namespace keyway::storage
