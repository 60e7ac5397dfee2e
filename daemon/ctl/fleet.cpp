// keywayctl fleet status | import: the etcd cluster behind a fleet and this host's place in it
// (docs/fleet.md).
#include <sys/stat.h>

#include "daemon/ctl/groups.hpp"
#include "daemon/etcd_client.hpp"
#include "storage/fleet_replica.hpp"
#include "storage/lmdb_credential_store.hpp"

namespace keyway::daemon::ctl {
namespace {

std::optional<int> needFleet(Context& c) {
  if (c.config->fleet) return std::nullopt;
  return c.fail("this configuration has no fleet: section (" + c.whereHint() + "); see docs/fleet.md",
                kCtlExitUsage);
}

int cmdFleetStatus(Context& c) {
  if (auto rc = needFleet(c)) return *rc;
  const core::FleetConfig& fleet = *c.config->fleet;
  auto etcd = EtcdClient::create(fleet);
  if (!etcd) return c.fail(etcd.error());
  const std::vector<EtcdEndpointStatus> members = (*etcd)->statusAll();
  std::optional<int64_t> cluster;
  for (const auto& m : members) {
    if (m.ok) cluster = std::max(cluster.value_or(0), m.revision);
  }
  std::optional<int64_t> replica;
  std::string replica_problem;
  struct stat st {};
  if (::stat(storage::credentialEnvPath(c.config->state_dir).c_str(), &st) == 0) {
    auto opened = storage::openFleetReplica(c.config->state_dir, c.config->master_key_file, fleet.prefix);
    if (opened) {
      auto state = (*opened)->state();
      if (state) {
        replica = state->revision;
      } else {
        replica_problem = state.error().message;
      }
    } else {
      replica_problem = opened.error().message;
    }
  } else {
    replica_problem = "no replica at " + storage::credentialEnvPath(c.config->state_dir) + " (keywayd makes it)";
  }
  std::optional<int64_t> lag;
  if (cluster && replica) lag = std::max<int64_t>(0, *cluster - *replica);
  const int rc = cluster ? kCtlExitOk : kCtlExitFailure;
  if (c.flag("--json")) {
    std::vector<std::string> list;
    for (const auto& m : members) {
      JsonObject o;
      o.str("endpoint", m.endpoint).boolean("ok", m.ok);
      if (m.ok) {
        o.str("version", m.version).num("revision", m.revision).boolean("leader", m.leader).null("error");
      } else {
        o.null("version").null("revision").boolean("leader", false).str("error", m.error);
      }
      list.push_back(o.text());
    }
    JsonObject out;
    out.str("prefix", fleet.prefix).raw("endpoints", jsonArray(list));
    cluster ? out.num("cluster_revision", *cluster) : out.null("cluster_revision");
    replica ? out.num("replica_revision", *replica) : out.null("replica_revision");
    lag ? out.num("lag_revisions", *lag) : out.null("lag_revisions");
    out.strOrNull("replica_problem", replica_problem);
    c.out << out.text() << "\n";
    return rc;
  }
  c.out << "prefix: " << fleet.prefix << "\n";
  std::vector<std::vector<std::string>> rows = {{"ENDPOINT", "STATE", "VERSION", "REVISION", "LEADER"}};
  for (const auto& m : members) {
    rows.push_back({m.endpoint, m.ok ? "ok" : "down: " + m.error, m.ok ? m.version : "-",
                    m.ok ? std::to_string(m.revision) : "-", m.leader ? "yes" : "-"});
  }
  printTable(c.out, rows);
  c.out << "cluster revision: " << (cluster ? std::to_string(*cluster) : "unknown (no member answered)") << "\n";
  c.out << "this host's replica: "
        << (replica ? "revision " + std::to_string(*replica)
                    : replica_problem.empty() ? std::string("never loaded (keywayd loads it)") : replica_problem)
        << "\n";
  if (lag) {
    c.out << "lag: " << *lag << " revisions"
          << (*lag > 0 ? " (other keys of the cluster count too; keywayd's keyway_fleet_lag_seconds says how long)" : "")
          << "\n";
  }
  if (!cluster) c.err << "keywayctl: etcd is unreachable: no endpoint answered\n";
  return rc;
}

int cmdFleetImport(Context& c) {
  if (auto rc = needFleet(c)) return *rc;
  const core::FleetConfig& fleet = *c.config->fleet;
  struct stat st {};
  if (::stat(storage::credentialEnvPath(c.config->state_dir).c_str(), &st) != 0) {
    return c.fail("there is no credential store to import at " + storage::credentialEnvPath(c.config->state_dir) +
                      " (" + c.whereHint() + ")",
                  kCtlExitUsage);
  }
  auto etcd = EtcdClient::create(fleet);
  if (!etcd) return c.fail(etcd.error());
  auto report = storage::importIntoFleet(**etcd, fleet.prefix, c.config->state_dir, c.config->master_key_file);
  if (!report) return c.fail(report.error());
  if (c.flag("--json")) {
    c.out << JsonObject()
                 .str("prefix", fleet.prefix)
                 .num("records", static_cast<uint64_t>(report->records))
                 .num("teams", static_cast<uint64_t>(report->counts.teams))
                 .num("clients", static_cast<uint64_t>(report->counts.clients))
                 .num("secrets", static_cast<uint64_t>(report->counts.secrets))
                 .num("bosa_users", static_cast<uint64_t>(report->counts.bosa_users))
                 .text()
          << "\n";
    return kCtlExitOk;
  }
  c.out << "imported " << report->records << " records into " << fleet.prefix << " (" << report->counts.teams
        << " teams, " << report->counts.clients << " clients, " << report->counts.secrets << " secrets, "
        << report->counts.bosa_users << " BOSA users); every keywayd of the fleet now serves them\n";
  return kCtlExitOk;
}

}  // namespace

const CommandGroup& fleetGroup() {
  static const CommandGroup group{
      "fleet",
      "keywayctl fleet status [--json]   the etcd members, the cluster's revision and this host's replica\n"
      "keywayctl fleet import [--json]   copy this host's store into the fleet's empty prefix (once)\n"
      "\n"
      "With a `fleet:` configuration the team, client, secret and bosa-user commands read and write\n"
      "etcd; rekey and restore are refused (docs/fleet.md).\n"
      "exit status: 0 ok, 1 no fleet configured or the prefix is not empty, 2 etcd unreachable\n",
      {
          {"status", 0, 0, {}, {"--json"}, {}, "keywayctl fleet status [--json]", Store::kNone, Input::kNone,
           cmdFleetStatus},
          {"import", 0, 0, {}, {"--json"}, {}, "keywayctl fleet import [--json]", Store::kNone, Input::kNone,
           cmdFleetImport},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
