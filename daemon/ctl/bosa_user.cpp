// keywayctl bosa-user add|list|grant|revoke|rm: BOSA users and the teams that may act as them.
#include "daemon/ctl/groups.hpp"

#include <iostream>

#include "daemon/ctl/secret_input.hpp"
#include "storage/names.hpp"

namespace keyway::daemon::ctl {
namespace {

int cmdUserAdd(Context& c) {
  const std::string& id = c.word(2);
  auto valid = storage::validateName("BOSA user", id);
  if (!valid) return c.fail(valid.error());
  const auto teams = splitList(*c.option("--team"));
  if (auto rc = checkTeams(c, teams)) return *rc;
  auto existing = c.store->findBosaUser(id);
  if (!existing) return c.fail(existing.error());
  if (*existing) return c.fail("BOSA user '" + id + "' already exists", kCtlExitUsage);
  auto input = readSecret(c.in, c.err, "BOSA user secret");
  if (!input.value) return c.fail(input.error, kCtlExitUsage);
  if (input.value->view().substr(0, 8) != "sk-user-") {
    c.err << "keywayctl: note: BOSA user secrets usually start with 'sk-user-'; stored anyway\n";
  }
  return reportChange(c, c.store->addBosaUser(id, *input.value, teams),
                      "added BOSA user '" + id + "' (teams: " + joinList(teams) + ")");
}

int cmdUserList(Context& c) {
  return printListing(c, c.store->listBosaUsers(),
                      "no BOSA users; add one with: keywayctl bosa-user add IDENTIFIER --team TEAM",
                      {"IDENTIFIER", "TEAMS", "CREATED"}, [](const core::BosaUserRecord& u) {
                        return std::vector<std::string>{
                            u.identifier, u.teams.empty() ? "-" : joinList(u.teams, ","),
                            formatTime(u.created_unix)};
                      });
}

int cmdUserGrant(Context& c) {
  const std::string team = *c.option("--team");
  return reportChange(c, c.store->grantBosaUser(c.word(2), team),
                      "granted BOSA user '" + c.word(2) + "' to team '" + team + "'");
}

int cmdUserRevoke(Context& c) {
  const std::string team = *c.option("--team");
  return reportChange(c, c.store->revokeBosaUser(c.word(2), team),
                      "revoked team '" + team + "' from BOSA user '" + c.word(2) + "'");
}

int cmdUserRm(Context& c) {
  return reportChange(c, c.store->removeBosaUser(c.word(2)),
                      "removed BOSA user '" + c.word(2) + "'");
}

}  // namespace

const CommandGroup& bosaUserGroup() {
  static const CommandGroup group = {
      "bosa-user",
      "usage: keywayctl bosa-user add IDENTIFIER --team TEAM[,TEAM...]\n"
      "       keywayctl bosa-user list\n"
      "       keywayctl bosa-user grant IDENTIFIER --team TEAM\n"
      "       keywayctl bosa-user revoke IDENTIFIER --team TEAM\n"
      "       keywayctl bosa-user rm IDENTIFIER\n"
      "\n"
      "Stores a BOSA user's identifier and secret (sk-user-..., read from standard input) and\n"
      "grants the user to teams. Apps of those teams act as the user with\n"
      "`Authorization: Bearer kwu_IDENTIFIER` or `X-Keyway-User: IDENTIFIER`.\n",
      {
          {"add", 1, 1, {"--team"}, {}, {"--team"},
           "keywayctl bosa-user add IDENTIFIER --team TEAM[,TEAM...] < user-secret",
           Store::kCredentials, Input::kSecret, cmdUserAdd},
          {"list", 0, 0, {}, {}, {}, "keywayctl bosa-user list", Store::kCredentials,
           Input::kNone, cmdUserList},
          {"grant", 1, 1, {"--team"}, {}, {"--team"},
           "keywayctl bosa-user grant IDENTIFIER --team TEAM", Store::kCredentials, Input::kNone,
           cmdUserGrant},
          {"revoke", 1, 1, {"--team"}, {}, {"--team"},
           "keywayctl bosa-user revoke IDENTIFIER --team TEAM", Store::kCredentials, Input::kNone,
           cmdUserRevoke},
          {"rm", 1, 1, {}, {}, {}, "keywayctl bosa-user rm IDENTIFIER", Store::kCredentials,
           Input::kNone, cmdUserRm},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
