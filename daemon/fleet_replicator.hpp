// keywayd's side of a fleet (docs/fleet.md): keeps this host's LMDB replica equal to etcd. A
// snapshot (range over the prefix) first, unless an earlier run left a copy at a known
// revision, then a watch from the next revision whose responses are applied in order, each in
// one LMDB transaction. A lost watch resumes from the last applied
// revision; a compacted one takes a new snapshot. A second thread probes the watched member
// every second, so a member that hangs (stopped, partitioned) is left as fast as one that
// refuses. Requests never wait for any of it: they read the replica.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/config.hpp"
#include "daemon/etcd_client.hpp"
#include "daemon/log.hpp"
#include "storage/fleet_replica.hpp"

namespace keyway::daemon {

class FleetReplicator {
 public:
  FleetReplicator(core::FleetConfig config, std::shared_ptr<EtcdClient> etcd,
                  std::unique_ptr<storage::FleetReplica> replica, std::shared_ptr<Logger> logger);
  ~FleetReplicator();
  FleetReplicator(const FleetReplicator&) = delete;
  FleetReplicator& operator=(const FleetReplicator&) = delete;

  void start();
  void stop();

  // Whether the replica holds this prefix's records (from now or an earlier run).
  bool synced() const { return revision_.load() > 0; }
  int64_t replicaRevision() const { return revision_.load(); }
  // 0 while the watch is connected and its member answers; else the time since it last was.
  double lagSeconds() const;
  bool watchConnected() const { return watch_connected_.load(); }
  uint64_t reconnects() const { return reconnects_.load(); }
  uint64_t snapshots() const { return snapshots_.load(); }
  uint64_t eventsApplied() const { return events_applied_.load(); }
  uint64_t errors() const { return errors_.load(); }
  // "watching", "connecting" or "unreachable", and the member watched ("" when none).
  std::string state() const;
  std::string endpoint() const;

 private:
  void run();
  void probe();
  bool snapshot();
  bool historyMatches();
  void watchOnce();
  void pause(std::chrono::milliseconds base);
  void fail(const std::string& what, const std::string& error);

  core::FleetConfig config_;
  std::shared_ptr<EtcdClient> etcd_;
  std::unique_ptr<storage::FleetReplica> replica_;
  std::shared_ptr<Logger> logger_;

  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;  // wakes pauses on stop; guards endpoint_ and state_
  std::condition_variable cv_;
  std::thread worker_, prober_;

  std::atomic<int64_t> revision_{0};
  std::atomic<int64_t> synced_at_ms_{0};  // steady clock: last moment the replica was known current
  std::atomic<bool> watch_connected_{false};
  std::atomic<bool> abort_watch_{false};
  std::atomic<uint64_t> reconnects_{0}, snapshots_{0}, events_applied_{0}, errors_{0};
  std::string endpoint_;
  std::string state_ = "connecting";
  bool need_snapshot_ = true;
  bool history_checked_ = false;  // the cluster's history up to revision_ is the replica's
  bool reported_unreachable_ = false;
  std::chrono::milliseconds backoff_{100};
};

// The `fleet` object of /_keyway/status (docs/operations.md).
std::string fleetStatusJson(const FleetReplicator& fleet);

}  // namespace keyway::daemon
