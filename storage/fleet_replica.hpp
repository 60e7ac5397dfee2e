// A host's copy of its fleet's records: the host's own LMDB credential store, which keywayd
// serves from whether etcd answers or not. keywayd's replicator (daemon/fleet_replicator.hpp)
// fills it with a snapshot and then the watch's events; each lands in one LMDB transaction with
// the revision it brings the copy to, so a crash leaves a consistent copy at a known revision.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/result.hpp"
#include "storage/credential_admin.hpp"
#include "storage/fleet_store.hpp"

namespace keyway::storage {

// One change of a watched key, in revision order.
struct FleetEvent {
  std::string key;
  std::optional<std::string> value;  // nullopt: deleted
  int64_t mod_revision = 0;
};

struct FleetReplicaState {
  std::optional<int64_t> revision;  // none: never loaded from this prefix
  int64_t synced_unix_ms = 0;       // when the copy was last brought up to date
  // The fleet's head value as of `revision`: a cluster whose head at that revision is another
  // (etcd restored from a backup, then written again) has a history the copy did not follow.
  std::string head;
};

class FleetReplica {
 public:
  virtual ~FleetReplica() = default;
  virtual core::Result<FleetReplicaState> state() = 0;
  // Replaces every fleet record of the copy with `range`'s (minted user tokens of users that
  // remain are kept) at range.revision. Every record is opened first: a record that does not
  // open fails the whole snapshot and changes nothing. Returns the number of records.
  virtual core::Result<size_t> applySnapshot(const FleetRange& range) = 0;
  // Applies events newer than the copy's revision, then records `revision` (also on a copy a
  // previous process loaded: a restarted keywayd resumes where it stopped). A meta change (the
  // fleet re-made under another key) is kBadRequest: the caller takes a new snapshot.
  virtual core::Status applyEvents(const std::vector<FleetEvent>& events, int64_t revision) = 0;
};

// The replica in <state_dir>/credentials (which keywayd has opened and initialised first) for
// the fleet under `prefix`, sealed with the key in `master_key_file`.
core::Result<std::unique_ptr<FleetReplica>> openFleetReplica(const std::string& state_dir,
                                                             const std::string& master_key_file,
                                                             const std::string& prefix);

struct FleetImportReport {
  size_t records = 0;
  StoreCounts counts;
};

// Copies the single-host store of `state_dir` into the fleet under `prefix`, which must be empty
// (kBadRequest "not empty" otherwise). The store's hashing subkeys go with it, so its client
// tokens work on every host. Large stores go in several transactions; the head is written last,
// so hosts (which wait for meta and head) never load half of it.
core::Result<FleetImportReport> importIntoFleet(FleetKv& kv, const std::string& prefix,
                                                const std::string& state_dir,
                                                const std::string& master_key_file);

}  // namespace keyway::storage
