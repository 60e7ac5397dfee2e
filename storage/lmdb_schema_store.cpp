// LmdbSchemaStore: BOSA discovery documents in their own durable LMDB environment.
#include "storage/lmdb_schema_store.hpp"

#include <lmdb.h>

#include <algorithm>
#include <type_traits>
#include <utility>

#include "storage/file_util.hpp"
#include "storage/lmdb_env.hpp"
#include "storage/record_codec.hpp"

namespace keyway::storage {

using core::Error;
using core::ErrorCode;
using core::Result;
using core::Status;

static_assert(std::is_same_v<MDB_dbi, unsigned>, "the header keeps MDB_dbi as unsigned");

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

MDB_val toVal(std::string_view s) {
  // LMDB never writes through mv_data of a key or a value passed to mdb_put.
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

Status validateUpstream(std::string_view upstream) { return validateName("upstream", upstream); }

}  // namespace

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

Result<core::StoredSchemas> decodeSchemaRecord(std::string_view upstream, std::string_view record) {
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

Result<std::shared_ptr<LmdbSchemaStore>> LmdbSchemaStore::open(const std::string& state_dir,
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
  std::shared_ptr<LmdbSchemaStore> store(
      new LmdbSchemaStore(std::move(env).value(), (*dbis)[0], (*dbis)[1]));
  store->last_generation_ = store->generation();
  return store;
}

const std::string& LmdbSchemaStore::path() const { return env_->path(); }

Result<std::optional<core::StoredSchemas>> LmdbSchemaStore::load(std::string_view upstream) {
  auto valid = validateUpstream(upstream);
  if (!valid) return valid.takeError();
  std::optional<core::StoredSchemas> out;
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(schemas_dbi_, upstream);
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

int LmdbSchemaStore::trySave(std::string_view upstream, std::string_view record, Error* error) {
  auto txn = env_->beginWrite();
  if (!txn) {
    *error = txn.takeError();
    return MDB_PANIC;  // not MDB_MAP_FULL: the caller does not retry
  }
  MDB_txn* raw = txn->raw();
  MDB_val gen_key = toVal(kGenerationKey);
  MDB_val gen_val{};
  uint64_t generation = 0;
  int rc = mdb_get(raw, meta_dbi_, &gen_key, &gen_val);
  if (rc == MDB_SUCCESS) {
    if (gen_val.mv_size == 8) {
      generation = getU64(std::string_view(static_cast<const char*>(gen_val.mv_data), 8));
    } else {
      // A damaged counter restarts from the environment's transaction id, which differs from
      // any small counter value readers may hold; they only compare for inequality.
      generation = env_->lastTxnId() + (uint64_t{1} << 32);
    }
  } else if (rc != MDB_NOTFOUND) {
    *error = lmdbError(rc, "read schema generation", env_->path());
    return rc;
  }
  ++generation;
  std::string gen_bytes;
  putU64(gen_bytes, generation);

  MDB_val key = toVal(upstream);
  MDB_val value = toVal(record);
  // Raw calls rather than LmdbTxn::put: the caller needs LMDB's own code to tell a full map
  // (grow and retry) from any other failure.
  rc = mdb_put(raw, schemas_dbi_, &key, &value, 0);
  if (rc == MDB_SUCCESS) {
    MDB_val g = toVal(gen_bytes);
    rc = mdb_put(raw, meta_dbi_, &gen_key, &g, 0);
  }
  if (rc != MDB_SUCCESS) {
    *error = lmdbError(rc, "save schemas of upstream '" + std::string(upstream) + "'",
                       env_->path());
    return rc;  // ~LmdbTxn aborts
  }
  auto committed = txn->commit();
  if (!committed) {
    *error = committed.takeError();
    return MDB_PANIC;
  }
  last_generation_ = generation;
  return MDB_SUCCESS;
}

Status LmdbSchemaStore::save(std::string_view upstream, const core::StoredSchemas& schemas) {
  auto valid = validateUpstream(upstream);
  if (!valid) return valid;
  if (schemas.document.size() > kMaxSchemaDocumentBytes) {
    return Error::make(ErrorCode::kPayloadTooLarge,
                       "the discovery document of upstream '" + std::string(upstream) + "' is " +
                           std::to_string(schemas.document.size()) +
                           " bytes, more than the limit of " +
                           std::to_string(kMaxSchemaDocumentBytes) +
                           " bytes; it was not stored (the stored one, if any, is kept)");
  }
  const std::string record = encodeSchemaRecord(schemas);
  Error error;
  for (int attempt = 0; attempt < kMaxSaveAttempts; ++attempt) {
    const int rc = trySave(upstream, record, &error);
    if (rc == MDB_SUCCESS) return core::okStatus();
    if (rc != MDB_MAP_FULL) return error;
    MDB_envinfo info{};
    if (mdb_env_info(env_->raw(), &info) != MDB_SUCCESS) return error;
    if (info.me_mapsize >= kMaxSchemaMapSize) return error;
    // Rare and large writes: doubling the (sparse) map is cheaper than failing a refresh. Other
    // processes adopt the new size on their next transaction (MDB_MAP_RESIZED in LmdbEnv).
    const size_t next = std::min(kMaxSchemaMapSize, std::max(info.me_mapsize * 2,
                                                             info.me_mapsize + 2 * record.size()));
    auto grown = env_->setMapSize(next);
    if (!grown) return grown;
  }
  return error;
}

uint64_t LmdbSchemaStore::generation() {
  uint64_t value = last_generation_.load();
  auto status = env_->view([&](LmdbTxn& txn) -> Status {
    auto raw = txn.get(meta_dbi_, kGenerationKey);
    if (!raw) return raw.takeError();
    if (!raw->has_value()) {
      value = 0;
    } else if ((*raw)->size() == 8) {
      value = getU64(**raw);
    }  // else damaged: keep the last value seen (the next save rewrites it)
    return core::okStatus();
  });
  if (status) last_generation_ = value;
  return value;
}

}  // namespace keyway::storage
