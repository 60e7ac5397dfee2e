// keywayd's fleet replica kept current from etcd (see fleet_replicator.hpp).
#include "daemon/fleet_replicator.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>


namespace keyway::daemon {

namespace {

using SteadyClock = std::chrono::steady_clock;

int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now().time_since_epoch()).count();
}

constexpr std::chrono::milliseconds kProbeEvery{1000};
constexpr std::chrono::milliseconds kProbeTimeout{1000};
constexpr std::chrono::milliseconds kMaxBackoff{2000};
// An empty or half-imported prefix is looked at again this often (docs/fleet.md).
constexpr std::chrono::milliseconds kEmptyPrefixRetry{2000};

}  // namespace

FleetReplicator::FleetReplicator(core::FleetConfig config, std::shared_ptr<EtcdClient> etcd,
                                 std::unique_ptr<storage::FleetReplica> replica, std::shared_ptr<Logger> logger)
    : config_(std::move(config)), etcd_(std::move(etcd)), replica_(std::move(replica)), logger_(std::move(logger)) {
  auto st = replica_->state();
  if (st && st->revision) {
    revision_.store(*st->revision);
    // Known current when it was last written (a restart does not make it current).
    const int64_t age_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count() -
        st->synced_unix_ms;
    synced_at_ms_.store(steadyMs() - std::max<int64_t>(age_ms, 0));
    // Resume from the copy's revision: etcd replays what changed meanwhile, or says it was
    // compacted away, and then a snapshot is taken.
    need_snapshot_ = false;
  } else if (!st) {
    logger_->warn("fleet replica state unreadable", {field("component", "fleet"), field("error", st.error().message)});
  }
}

FleetReplicator::~FleetReplicator() { stop(); }

void FleetReplicator::start() {
  worker_ = std::thread([this] { run(); });
  prober_ = std::thread([this] { probe(); });
}

void FleetReplicator::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  etcd_->cancel();
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (prober_.joinable()) prober_.join();
}

double FleetReplicator::lagSeconds() const {
  if (watch_connected_.load()) return 0.0;
  const int64_t at = synced_at_ms_.load();
  if (at == 0) return 0.0;
  return static_cast<double>(steadyMs() - at) / 1000.0;
}

std::string FleetReplicator::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

std::string FleetReplicator::endpoint() const {
  std::lock_guard<std::mutex> lock(mu_);
  return endpoint_;
}

void FleetReplicator::pause(std::chrono::milliseconds base) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, jittered(base), [this] { return stop_.load(); });
}

void FleetReplicator::fail(const std::string& what, const std::string& error) {
  errors_.fetch_add(1);
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    first = !reported_unreachable_;
    reported_unreachable_ = true;
    state_ = "unreachable";
  }
  if (first) {
    logger_->warn("fleet etcd unreachable; serving from the replica",
                  {field("component", "fleet"), field("during", what), field("error", error),
                   field("replica_revision", revision_.load())});
  } else {
    logger_->warnRateLimited("fleet-" + what, "fleet " + what + " failed", std::chrono::seconds(30),
                             {field("component", "fleet"), field("error", error)});
  }
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  pause(backoff_);
}

bool FleetReplicator::snapshot() {
  auto range = etcd_->range(config_.prefix);
  if (!range) {
    fail("snapshot", range.error().message);
    return false;
  }
  const bool ready = storage::fleetInitialised(*range, config_.prefix) &&
                     storage::findFleetEntry(*range, config_.prefix + std::string(storage::kFleetHead)) != nullptr;
  if (!ready) {
    // Nothing to copy yet (or an import still running): keep the local store as it is.
    logger_->warnRateLimited("fleet-empty", "fleet prefix holds no store yet; serving this host's records",
                             std::chrono::seconds(60),
                             {field("component", "fleet"), field("prefix", config_.prefix),
                              field("hint", "keywayctl fleet import, or any keywayctl write, creates it")});
    pause(kEmptyPrefixRetry);
    return false;
  }
  auto applied = replica_->applySnapshot(*range);
  if (!applied) {
    errors_.fetch_add(1);
    logger_->error("fleet snapshot not applied; serving the replica as it was",
                   {field("component", "fleet"), field("error", applied.error().message)});
    pause(kMaxBackoff);
    return false;
  }
  revision_.store(range->revision);
  synced_at_ms_.store(steadyMs());
  snapshots_.fetch_add(1);
  logger_->info("fleet snapshot loaded", {field("component", "fleet"), field("revision", range->revision),
                                          field("records", static_cast<int64_t>(*applied))});
  need_snapshot_ = false;
  history_checked_ = true;
  return true;
}

// Whether etcd's history up to the replica's revision is the one the replica followed: the head
// value at that revision must be the one the replica saw. After a restore from a backup the
// cluster may have been written up to (or past) the replica's revision again, with other changes.
bool FleetReplicator::historyMatches() {
  auto state = replica_->state();
  if (!state) {
    fail("replica read", state.error().message);
    return false;
  }
  auto head = etcd_->valueAt(config_.prefix + std::string(storage::kFleetHead), revision_.load());
  if (!head && head.error().code == core::ErrorCode::kNotFound) {
    // Compacted past the replica (or not there yet: restored behind it): a snapshot decides.
    logger_->warn("fleet revision of the replica is no longer (or not yet) in etcd; taking a new snapshot",
                  {field("component", "fleet"), field("replica_revision", revision_.load()),
                   field("error", head.error().message)});
    need_snapshot_ = true;
    return false;
  }
  if (!head) {
    fail("watch", head.error().message);
    return false;
  }
  if (head->value_or(std::string()) != state->head) {
    logger_->warn("fleet history differs from the replica's (etcd restored from a backup?); taking a new snapshot",
                  {field("component", "fleet"), field("replica_revision", revision_.load())});
    need_snapshot_ = true;
    return false;
  }
  return true;
}

void FleetReplicator::watchOnce() {
  if (!history_checked_) {
    if (!historyMatches()) return;
    history_checked_ = true;
  }
  const int64_t from = revision_.load() + 1;
  abort_watch_.store(false);
  std::string endpoint;
  std::string apply_error;
  auto on_batch = [&](const EtcdWatchBatch& batch) -> bool {
    if (batch.compact_revision > 0) {
      logger_->warn("fleet watch compacted; taking a new snapshot",
                    {field("component", "fleet"), field("compact_revision", batch.compact_revision),
                     field("replica_revision", revision_.load())});
      need_snapshot_ = true;
      return false;
    }
    if (batch.canceled) return false;
    if (batch.created && batch.revision < revision_.load()) {
      // The cluster is behind the replica: etcd was restored from a backup. Its revisions up to
      // ours are other changes than the ones applied: start again from a snapshot.
      logger_->warn("fleet cluster revision is behind the replica (etcd restored from a backup?); taking a new snapshot",
                    {field("component", "fleet"), field("cluster_revision", batch.revision),
                     field("replica_revision", revision_.load())});
      need_snapshot_ = true;
      return false;
    }
    if (batch.created) {
      watch_connected_.store(true);
      synced_at_ms_.store(steadyMs());
      backoff_ = std::chrono::milliseconds(100);
      {
        std::lock_guard<std::mutex> lock(mu_);
        state_ = "watching";
        endpoint_ = endpoint;
        if (reported_unreachable_) {
          reported_unreachable_ = false;
          logger_->info("fleet etcd reachable again", {field("component", "fleet"), field("endpoint", endpoint)});
        }
      }
      logger_->info("fleet watch connected",
                    {field("component", "fleet"), field("endpoint", endpoint), field("from_revision", from)});
    }
    if (logger_->enabled(LogLevel::kDebug)) {
      logger_->log(LogLevel::kDebug, "fleet watch response",
                   {field("component", "fleet"), field("revision", batch.revision),
                    field("events", static_cast<int64_t>(batch.events.size()))});
    }
    if (batch.events.empty()) return true;
    int64_t last = 0;
    for (const auto& ev : batch.events) last = std::max(last, ev.mod_revision);
    auto st = replica_->applyEvents(batch.events, last);
    if (!st) {
      apply_error = st.error().message;
      need_snapshot_ = true;  // start again from a consistent copy
      return false;
    }
    revision_.store(std::max(revision_.load(), last));
    synced_at_ms_.store(steadyMs());
    events_applied_.fetch_add(batch.events.size());
    return true;
  };
  auto keep_going = [this] { return !stop_.load() && !abort_watch_.load(); };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != "unreachable") state_ = "connecting";
  }
  auto status = etcd_->watch(config_.prefix, from, on_batch, keep_going, &endpoint);
  const bool was_connected = watch_connected_.exchange(false);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == "watching") state_ = "connecting";
  }
  if (stop_.load()) return;
  if (was_connected) {
    // The replica was current until now.
    synced_at_ms_.store(steadyMs());
  }
  reconnects_.fetch_add(1);
  history_checked_ = false;  // the cluster may have been restored while the watch was down
  if (!apply_error.empty()) {
    errors_.fetch_add(1);
    logger_->error("fleet event not applied; taking a new snapshot",
                   {field("component", "fleet"), field("error", apply_error)});
    return;
  }
  if (need_snapshot_) return;
  const std::string why = !status ? status.error().message
                                  : abort_watch_.load() ? endpoint + " stopped answering its health probe"
                                                        : "the stream ended";
  etcd_->avoid(endpoint);
  if (was_connected) {
    logger_->warn("fleet watch lost", {field("component", "fleet"), field("endpoint", endpoint), field("error", why)});
    pause(std::chrono::milliseconds(100));
  } else {
    fail("watch", why);
  }
}

void FleetReplicator::run() {
  while (!stop_.load()) {
    if (need_snapshot_) {
      snapshot();
      continue;
    }
    watchOnce();
  }
}

void FleetReplicator::probe() {
  while (!stop_.load()) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, kProbeEvery, [this] { return stop_.load(); });
    }
    if (stop_.load()) return;
    if (!watch_connected_.load()) continue;
    const std::string watched = endpoint();
    if (watched.empty()) continue;
    const auto st = etcd_->status(watched, kProbeTimeout);
    if (st.ok) {
      synced_at_ms_.store(steadyMs());
      continue;
    }
    // A member that stopped answering keeps the stream open and sends nothing: leave it.
    abort_watch_.store(true);
  }
}

std::string fleetStatusJson(const FleetReplicator& fleet) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("state");
  const std::string state = fleet.state();
  w.String(state.c_str());
  w.Key("endpoint");
  const std::string endpoint = fleet.endpoint();
  if (endpoint.empty()) {
    w.Null();
  } else {
    w.String(endpoint.c_str());
  }
  w.Key("replica_revision");
  w.Int64(fleet.replicaRevision());
  w.Key("lag_seconds");
  w.Double(fleet.lagSeconds());
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace keyway::daemon
