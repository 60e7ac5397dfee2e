// A fleet's credential store: the records of every host kept in etcd under one prefix, sealed
// under the master key every host holds (docs/fleet.md). This file knows the layout and the
// sealing, and runs keywayctl's units against it; the transport to etcd is daemon/'s
// (FleetKv), and each keywayd's local copy is storage/fleet_replica.hpp's.
//
// Layout under the prefix:
//   meta/key_id     hex Keyring::keyId of the master key (names the key, reveals nothing)
//   meta/hash_keys  the hashing subkeys, sealed (token hashes and cache identities stay equal
//                   across the fleet and across a store imported from a single host)
//   head            rewritten by every write: writers compare its revision (optimistic locking)
//   r/<table>/<h>   one record; h is a keyed hash of its table and name (names are not readable),
//                   the value the record sealed with its own name, bound to this key
// Minted BOSA user tokens stay with the host that minted them: they are never written here.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/credential_store.hpp"
#include "core/result.hpp"
#include "storage/crypto.hpp"
#include "storage/table_records.hpp"

namespace keyway::storage {

inline constexpr std::string_view kFleetHead = "head";
inline constexpr std::string_view kFleetKeyId = "meta/key_id";
inline constexpr std::string_view kFleetHashKeys = "meta/hash_keys";
inline constexpr std::string_view kFleetRecords = "r/";

struct FleetEntry {
  std::string key;  // full etcd key, prefix included
  std::string value;
  int64_t mod_revision = 0;
};

// Every key under a prefix at one revision of the cluster.
struct FleetRange {
  int64_t revision = 0;
  std::vector<FleetEntry> entries;
};

struct FleetWrite {
  std::string key;
  std::optional<std::string> value;  // nullopt: delete
};

// A condition of a commit: `key`'s last modification is still `mod_revision` (0: it is absent).
struct FleetGuard {
  std::string key;
  int64_t mod_revision = 0;
};

// What the fleet store needs from etcd. Errors are kUnavailable when no endpoint answered.
class FleetKv {
 public:
  virtual ~FleetKv() = default;
  virtual core::Result<FleetRange> range(const std::string& prefix) = 0;
  // Applies `writes` in one transaction when every guard holds; false (nothing written) when one
  // does not.
  virtual core::Result<bool> commit(const std::vector<FleetGuard>& guards,
                                    const std::vector<FleetWrite>& writes) = 0;
};

// The largest number of writes one etcd transaction carries (etcd's --max-txn-ops defaults to
// 128; the head and meta writes take the rest).
inline constexpr size_t kFleetMaxWritesPerTxn = 120;

// Names and seals records under a prefix with one keyring.
class FleetCodec {
 public:
  FleetCodec(std::string prefix, std::shared_ptr<const Keyring> keyring)
      : prefix_(std::move(prefix)), keyring_(std::move(keyring)) {}

  struct Record {
    RecordTable table;
    std::string key;
    std::string value;
  };
  std::string recordKey(RecordTable table, std::string_view key) const;
  std::string seal(RecordTable table, std::string_view key, std::string_view value) const;
  // nullopt for a key that is not a record (meta, head); kInternal for a record that does not
  // open (another master key, tampered, or moved to another name).
  core::Result<std::optional<Record>> open(std::string_view etcd_key, std::string_view value) const;

  const std::string& prefix() const { return prefix_; }
  const Keyring& keyring() const { return *keyring_; }
  std::shared_ptr<const Keyring> sharedKeyring() const { return keyring_; }

 private:
  std::string prefix_;
  std::shared_ptr<const Keyring> keyring_;
};

// The value of `key` (prefix + name) in `range`, if present.
const FleetEntry* findFleetEntry(const FleetRange& range, const std::string& key);

// Whether the prefix holds a fleet store (its meta records were written).
bool fleetInitialised(const FleetRange& range, const std::string& prefix);

// The fleet's keyring from its meta records and `key`. kInternal naming both key ids when the
// fleet is sealed under another master key, or when the meta records are damaged.
core::Result<std::shared_ptr<const Keyring>> fleetKeyring(const FleetRange& range,
                                                          const std::string& prefix,
                                                          const MasterKey& key);

// A fresh random value for the head: what a writer puts there, and later recognises as its own.
std::string newFleetHeadValue();

// The meta writes that make `prefix` a fleet store sealed with `keyring`.
std::vector<FleetWrite> fleetMetaWrites(const std::string& prefix, const Keyring& keyring);

// A fleet's credential store for keywayctl: every command is one unit run on the records as
// read from etcd, its writes committed in one transaction guarded by the head's revision. On a
// conflict (another writer committed in between) the unit runs again on the new records, so its
// rules see the other change, after a random pause that grows; when it has not committed within
// kFleetWriteBudget it fails (kUnavailable). A time budget rather than a count of attempts: a
// writer whose reads are slow (a large store, a loaded host) loses every race to faster writers
// and needs more attempts, not fewer. `key` is the master key; on an empty prefix the first
// write makes the store with Keyring::create(key).
inline constexpr std::chrono::seconds kFleetWriteBudget{20};
core::Result<std::unique_ptr<core::CredentialStore>> openFleetCredentialStore(
    std::shared_ptr<FleetKv> kv, std::string prefix, const std::string& master_key_file,
    std::shared_ptr<const core::Clock> clock = nullptr);

}  // namespace keyway::storage
