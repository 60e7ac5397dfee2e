// keywayctl bosa-user add|set-secret|list|grant|revoke|rm: BOSA users and the teams that may act
// as them.
#include "daemon/ctl/groups.hpp"

#include <algorithm>
#include <iostream>

#include "daemon/ctl/secret_input.hpp"
#include "storage/names.hpp"

namespace keyway::daemon::ctl {
namespace {

// The --team list, every team known and able to reach a BOSA upstream (a grant to any other team
// could never be used), checked before a secret is read or anything is written.
std::optional<int> grantableTeams(Context& c, std::vector<std::string>* teams) {
  if (auto rc = teamList(c, teams)) return rc;
  if (auto rc = checkTeams(c, *teams)) return rc;
  std::vector<std::string> bosa;
  for (const auto& u : c.config->upstreams) {
    if (u.protocol == core::Protocol::kBosa) bosa.push_back(u.name);
  }
  if (bosa.empty()) {
    return c.fail("no BOSA upstream is configured in " + c.config_path +
                      " (an upstream with protocol bosa), so no team can act as a BOSA user",
                  kCtlExitUsage);
  }
  for (const auto& name : *teams) {
    auto team = c.store->findTeam(name);
    if (!team) return c.fail(team.error());
    if (!*team || teamReachesBosa(*c.config, **team)) continue;
    return c.fail("team '" + name + "' has no access to a BOSA upstream (its upstreams: " +
                      joinList((*team)->upstreams) + "), so its apps could not act as a BOSA "
                      "user; give it access first: keywayctl team set " + name +
                      " --upstreams " + joinList((*team)->upstreams, ",") + "," + bosa.front(),
                  kCtlExitUsage);
  }
  return std::nullopt;
}

// Reads the user secret from stdin; a note when it does not look like one.
std::optional<core::SecretString> readUserSecret(Context& c, int* rc) {
  auto input = readSecret(c.in, c.err, "BOSA user secret");
  if (!input.value) {
    *rc = c.fail(input.error, kCtlExitUsage);
    return std::nullopt;
  }
  if (input.value->view().substr(0, 8) != "sk-user-") {
    c.err << "keywayctl: note: BOSA user secrets usually start with 'sk-user-'; stored anyway\n";
  }
  return std::move(input.value);
}

int cmdUserAdd(Context& c) {
  const std::string& id = c.word(2);
  auto valid = storage::validateName("BOSA user", id);
  if (!valid) return c.fail(valid.error());
  std::vector<std::string> teams;
  if (auto rc = grantableTeams(c, &teams)) return *rc;
  auto existing = c.store->findBosaUser(id);
  if (!existing) return c.fail(existing.error());
  if (*existing) {
    return c.fail("BOSA user '" + id + "' already exists; change its secret with `keywayctl "
                  "bosa-user set-secret " + id + "`, its teams with `bosa-user grant|revoke`",
                  kCtlExitUsage);
  }
  int rc = kCtlExitOk;
  auto secret = readUserSecret(c, &rc);
  if (!secret) return rc;
  return reportChange(c, c.store->addBosaUser(id, *secret, teams),
                      "added BOSA user '" + id + "' (teams: " + joinList(teams) + ")");
}

int cmdUserSetSecret(Context& c) {
  const std::string& id = c.word(2);
  auto valid = storage::validateName("BOSA user", id);
  if (!valid) return c.fail(valid.error());
  auto existing = c.store->findBosaUser(id);
  if (!existing) return c.fail(existing.error());
  if (!*existing) {
    return c.fail("unknown BOSA user '" + id + "'; add it with `keywayctl bosa-user add " + id +
                      " --team TEAM`",
                  kCtlExitUsage);
  }
  int rc = kCtlExitOk;
  auto secret = readUserSecret(c, &rc);
  if (!secret) return rc;
  return reportChange(c, c.store->setBosaUserSecret(id, *secret),
                      "replaced the secret of BOSA user '" + id + "' (teams kept: " +
                          ((*existing)->teams.empty() ? std::string("none")
                                                      : joinList((*existing)->teams)) +
                          "); the next request acting as the user mints a new token with it");
}

int cmdUserList(Context& c) {
  auto users = c.store->listBosaUsers();
  std::string none = "no BOSA users; add one with: keywayctl bosa-user add IDENTIFIER --team TEAM";
  if (auto rc = filterByTeams(c, users, none, "no BOSA users granted to team(s) ",
                              [](const core::BosaUserRecord& u, const auto& listed) {
                                return std::any_of(u.teams.begin(), u.teams.end(), listed);
                              })) {
    return *rc;
  }
  return printListing(
      c, users, none, {"IDENTIFIER", "TEAMS", "CREATED"},
      [](const core::BosaUserRecord& u) {
        return std::vector<std::string>{u.identifier, u.teams.empty() ? "-" : joinList(u.teams, ","),
                                        formatTime(u.created_unix)};
      },
      [](const core::BosaUserRecord& u) {
        return JsonObject()
            .str("identifier", u.identifier)
            .strings("teams", u.teams)
            .time("created", u.created_unix);
      });
}

// The teams of `asked` not in `changed`, in the order asked.
std::vector<std::string> unchanged(const std::vector<std::string>& asked,
                                   const std::vector<std::string>& changed) {
  std::vector<std::string> out;
  for (const auto& t : asked) {
    if (std::find(changed.begin(), changed.end(), t) == changed.end() &&
        std::find(out.begin(), out.end(), t) == out.end()) {
      out.push_back(t);
    }
  }
  return out;
}

// Grant and revoke are idempotent: what was already so is said, not refused.
int reportTeamChange(Context& c, const core::Result<std::vector<std::string>>& changed,
                     const std::vector<std::string>& asked, const std::string& did,
                     const std::string& already) {
  if (!changed) return c.fail(changed.error());
  const std::string& id = c.word(2);
  const auto same = unchanged(asked, *changed);
  if (!changed->empty()) {
    c.out << did << " BOSA user '" << id << "': team(s) " << joinList(*changed) << "\n";
  }
  if (!same.empty()) {
    c.out << "BOSA user '" << id << "' " << already << " team(s) " << joinList(same)
          << "; nothing changed there\n";
  }
  return kCtlExitOk;
}

int cmdUserGrant(Context& c) {
  std::vector<std::string> teams;
  if (auto rc = grantableTeams(c, &teams)) return *rc;
  return reportTeamChange(c, c.store->grantBosaUser(c.word(2), teams), teams, "granted",
                          "was already granted to");
}

int cmdUserRevoke(Context& c) {
  std::vector<std::string> teams;
  if (auto rc = teamList(c, &teams)) return *rc;
  return reportTeamChange(c, c.store->revokeBosaUser(c.word(2), teams), teams,
                          "revoked the grant of", "was not granted to");
}

int cmdUserRm(Context& c) {
  return reportChange(c, c.store->removeBosaUser(c.word(2)),
                      "removed BOSA user '" + c.word(2) + "'");
}

}  // namespace

const CommandGroup& bosaUserGroup() {
  static const CommandGroup group = {
      "bosa-user",
      "usage: keywayctl bosa-user add IDENTIFIER --team T1[,T2...]\n"
      "       keywayctl bosa-user set-secret IDENTIFIER\n"
      "       keywayctl bosa-user list [--team T1[,T2...]] [--json]\n"
      "       keywayctl bosa-user grant IDENTIFIER --team T1[,T2...]\n"
      "       keywayctl bosa-user revoke IDENTIFIER --team T1[,T2...]\n"
      "       keywayctl bosa-user rm IDENTIFIER\n"
      "\n"
      "Stores a BOSA user's identifier and secret (sk-user-..., read from standard input) and\n"
      "grants the user to teams. Apps of those teams act as the user with\n"
      "`Authorization: Bearer kwu_IDENTIFIER` or `X-Keyway-User: IDENTIFIER`.\n"
      "Only teams with access to a BOSA upstream can be granted a user. `grant` and `revoke`\n"
      "are idempotent: a team already granted (or not granted) is reported and exits 0.\n"
      "`set-secret` replaces the user's secret (from standard input) and keeps its grants.\n",
      {
          {"add", 1, 1, {"--team"}, {}, {"--team"},
           "keywayctl bosa-user add IDENTIFIER --team T1[,T2...] < user-secret",
           Store::kCredentials, Input::kSecret, cmdUserAdd},
          {"set-secret", 1, 1, {}, {}, {}, "keywayctl bosa-user set-secret IDENTIFIER < user-secret",
           Store::kCredentials, Input::kSecret, cmdUserSetSecret},
          {"list", 0, 0, {"--team"}, {"--json"}, {},
           "keywayctl bosa-user list [--team T1[,T2...]] [--json]", Store::kCredentials,
           Input::kNone, cmdUserList},
          {"grant", 1, 1, {"--team"}, {}, {"--team"},
           "keywayctl bosa-user grant IDENTIFIER --team T1[,T2...]", Store::kCredentials,
           Input::kNone, cmdUserGrant},
          {"revoke", 1, 1, {"--team"}, {}, {"--team"},
           "keywayctl bosa-user revoke IDENTIFIER --team T1[,T2...]", Store::kCredentials,
           Input::kNone, cmdUserRevoke},
          {"rm", 1, 1, {}, {}, {}, "keywayctl bosa-user rm IDENTIFIER", Store::kCredentials,
           Input::kNone, cmdUserRm},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
