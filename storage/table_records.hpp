// Credential records over a set of key/value tables: the one encoding of the store's records
// (storage/record_codec) and of what is sealed in them, whatever holds the tables (an LMDB
// transaction, or the in-memory copy of a fleet's records taken from etcd).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/credential_records.hpp"

namespace keyway::storage {

// The tables of the credential store that hold records (meta is each store's own).
enum class RecordTable { kTeams, kClients, kClientTokens, kSecrets, kBosaUsers, kUserTokens };
inline constexpr RecordTable kRecordTables[] = {RecordTable::kTeams,     RecordTable::kClients,
                                                RecordTable::kClientTokens, RecordTable::kSecrets,
                                                RecordTable::kBosaUsers, RecordTable::kUserTokens};
// The table's name (record_codec's table::k*: also the start of its sealed fields' associated data).
std::string_view recordTableName(RecordTable table);
std::optional<RecordTable> recordTableNamed(std::string_view name);

// Raw records by table. A value returned by get() or passed to forEach's fn is valid until the
// next write.
class RecordTables {
 public:
  virtual ~RecordTables() = default;
  virtual core::Result<std::optional<std::string_view>> get(RecordTable table, std::string_view key) = 0;
  virtual core::Status put(RecordTable table, std::string_view key, std::string_view value) = 0;
  virtual core::Result<bool> del(RecordTable table, std::string_view key) = 0;
  // fn(key, value) for each record whose key starts with `prefix`, in key order, until it returns false.
  virtual core::Status forEach(RecordTable table, std::string_view prefix,
                               const std::function<bool(std::string_view, std::string_view)>& fn) = 0;
};

// The records of `tables`, sealed and opened with `keyring`; both must outlive the result.
std::unique_ptr<CredentialRecordsTxn> tableRecordsTxn(RecordTables& tables, const Keyring& keyring);

// Tables in memory that remember what was written to them (a unit run on a copy, whose writes
// are then sent elsewhere in one piece).
class MapTables final : public RecordTables {
 public:
  core::Result<std::optional<std::string_view>> get(RecordTable table, std::string_view key) override;
  core::Status put(RecordTable table, std::string_view key, std::string_view value) override;
  core::Result<bool> del(RecordTable table, std::string_view key) override;
  core::Status forEach(RecordTable table, std::string_view prefix,
                       const std::function<bool(std::string_view, std::string_view)>& fn) override;

  // Loads a record without counting it as a change.
  void load(RecordTable table, std::string key, std::string value);
  // What was written since the load, by (table, key): the new value, or nullopt for a deletion.
  // A key written back to what it was loaded with is still listed.
  const std::map<std::pair<RecordTable, std::string>, std::optional<std::string>>& changes() const {
    return changes_;
  }
  size_t size(RecordTable table) const { return tables_[static_cast<size_t>(table)].size(); }

 private:
  std::map<std::string, std::string, std::less<>> tables_[6];
  std::map<std::pair<RecordTable, std::string>, std::optional<std::string>> changes_;
};

}  // namespace keyway::storage
