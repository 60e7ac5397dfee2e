// keywayctl team add|list|rm: the teams clients belong to and the upstreams each may use.
#include "daemon/ctl/groups.hpp"

#include <iostream>

namespace keyway::daemon::ctl {
namespace {

int cmdTeamAdd(Context& c) {
  core::TeamRecord team;
  team.name = c.word(2);
  if (auto list = c.option("--upstreams")) {
    team.all_upstreams = false;
    for (const auto& u : splitList(*list)) {
      if (u.empty()) {
        return c.fail("--upstreams has an empty entry: '" + *list + "'", kCtlExitUsage);
      }
      if (auto rc = checkUpstream(c, u)) return *rc;
      team.upstreams.push_back(u);
    }
  }
  return reportChange(c, c.store->addTeam(team),
                      "added team '" + team.name + "' (upstreams: " +
                          (team.all_upstreams ? std::string("all") : joinList(team.upstreams)) +
                          ")");
}

int cmdTeamList(Context& c) {
  return printListing(c, c.store->listTeams(), "no teams; add one with: keywayctl team add NAME",
                      {"NAME", "UPSTREAMS", "CREATED"}, [](const core::TeamRecord& t) {
                        return std::vector<std::string>{
                            t.name, t.all_upstreams ? "all" : joinList(t.upstreams, ","),
                            formatTime(t.created_unix)};
                      });
}

int cmdTeamRm(Context& c) {
  return reportChange(c, c.store->removeTeam(c.word(2)), "removed team '" + c.word(2) + "'");
}

}  // namespace

const CommandGroup& teamGroup() {
  static const CommandGroup group = {
      "team",
      "usage: keywayctl team add NAME [--upstreams a,b,...]\n"
      "       keywayctl team list\n"
      "       keywayctl team rm NAME\n"
      "\n"
      "A team groups clients; it may use every configured upstream (default) or only those\n"
      "listed with --upstreams. `team rm` refuses while active clients belong to the team;\n"
      "it also removes the team's own secrets and its BOSA user grants.\n",
      {
          {"add", 1, 1, {"--upstreams"}, {}, {}, "keywayctl team add NAME [--upstreams a,b,...]",
           Store::kCredentials, Input::kNone, cmdTeamAdd},
          {"list", 0, 0, {}, {}, {}, "keywayctl team list", Store::kCredentials, Input::kNone,
           cmdTeamList},
          {"rm", 1, 1, {}, {}, {}, "keywayctl team rm NAME", Store::kCredentials, Input::kNone,
           cmdTeamRm},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
