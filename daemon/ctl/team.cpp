// keywayctl team add|set|list|rm: the teams clients belong to and the upstreams each may use.
#include "daemon/ctl/groups.hpp"

#include <iostream>

namespace keyway::daemon::ctl {
namespace {

std::string upstreamsText(const core::TeamRecord& team) {
  return team.all_upstreams ? std::string("all") : joinList(team.upstreams);
}

// The team's access as given by --upstreams a,b (each configured) or --all-upstreams; without
// either, every upstream. Returns the exit code of the error printed, if any.
std::optional<int> readAccess(Context& c, core::TeamRecord& team) {
  team.all_upstreams = true;
  team.upstreams.clear();
  auto list = c.option("--upstreams");
  if (!list) return std::nullopt;
  team.all_upstreams = false;
  for (const auto& u : splitList(*list)) {
    if (u.empty()) return c.fail("--upstreams has an empty entry: '" + *list + "'", kCtlExitUsage);
    if (auto rc = checkUpstream(c, u)) return rc;
    team.upstreams.push_back(u);
  }
  return std::nullopt;
}

int cmdTeamAdd(Context& c) {
  core::TeamRecord team;
  team.name = c.word(2);
  if (auto rc = readAccess(c, team)) return *rc;
  return reportChange(c, c.store->addTeam(team),
                      "added team '" + team.name + "' (upstreams: " + upstreamsText(team) + ")");
}

std::optional<std::string> checkAccessOptions(const Args& args) {
  const bool all = args.flags.count("--all-upstreams") != 0;
  const bool list = args.options.count("--upstreams") != 0;
  if (all == list) return std::string("give either --upstreams a,b,... or --all-upstreams");
  return std::nullopt;
}

int cmdTeamSet(Context& c) {
  core::TeamRecord team;
  team.name = c.word(2);
  if (auto rc = readAccess(c, team)) return *rc;
  auto before = c.store->findTeam(team.name);
  if (!before) return c.fail(before.error());
  if (int rc = reportChange(c, c.store->setTeamUpstreams(team),
                            "team '" + team.name + "' now has upstreams: " + upstreamsText(team) +
                                " (its clients keep their tokens; a running keywayd applies it "
                                "to the next request)");
      rc != kCtlExitOk) {
    return rc;
  }
  // Grants stay as they are: say when they no longer lead anywhere.
  if (*before && teamReachesBosa(*c.config, **before) && !teamReachesBosa(*c.config, team)) {
    auto users = c.store->listBosaUsers();
    std::vector<std::string> granted;
    if (users) {
      for (const auto& u : *users) {
        for (const auto& t : u.teams) {
          if (t == team.name) granted.push_back(u.identifier);
        }
      }
    }
    if (!granted.empty()) {
      c.err << "keywayctl: note: team '" << team.name
            << "' no longer reaches a BOSA upstream; its grants of BOSA users ("
            << joinList(granted) << ") stay but are unused until it does\n";
    }
  }
  return kCtlExitOk;
}

int cmdTeamList(Context& c) {
  return printListing(
      c, c.store->listTeams(), "no teams; add one with: keywayctl team add NAME",
      {"NAME", "UPSTREAMS", "CREATED"},
      [](const core::TeamRecord& t) {
        return std::vector<std::string>{t.name, t.all_upstreams ? "all" : joinList(t.upstreams, ","),
                                        formatTime(t.created_unix)};
      },
      [](const core::TeamRecord& t) {
        return JsonObject()
            .str("name", t.name)
            .boolean("all_upstreams", t.all_upstreams)
            .strings("upstreams", t.upstreams)
            .time("created", t.created_unix);
      });
}

int cmdTeamRm(Context& c) {
  const std::string& name = c.word(2);
  auto removed = c.store->removeTeam(name, c.flag("--force"));
  if (!removed) return c.fail(removed.error());
  std::vector<std::string> parts;
  if (!removed->secrets.empty()) parts.push_back("its secrets " + joinList(removed->secrets));
  if (!removed->bosa_users.empty()) {
    parts.push_back("its grants of BOSA users " + joinList(removed->bosa_users));
  }
  if (!removed->revoked_clients.empty()) {
    parts.push_back("its revoked clients " + joinList(removed->revoked_clients));
  }
  c.out << "removed team '" << name << "'"
        << (parts.empty() ? std::string() : " with " + joinList(parts, "; ")) << "\n";
  return kCtlExitOk;
}

}  // namespace

const CommandGroup& teamGroup() {
  static const CommandGroup group = {
      "team",
      "usage: keywayctl team add NAME [--upstreams a,b,...]\n"
      "       keywayctl team set NAME --upstreams a,b,... | --all-upstreams\n"
      "       keywayctl team list [--json]\n"
      "       keywayctl team rm NAME [--force]\n"
      "\n"
      "A team groups clients; it may use every configured upstream (default) or only those\n"
      "listed with --upstreams. `team set` replaces that access in place: clients keep their\n"
      "tokens, and a running keywayd applies it to the next request.\n"
      "`team rm` refuses while active clients belong to the team (revoke them first). It also\n"
      "refuses while the team has its own secrets or BOSA user grants, naming them; with\n"
      "--force it deletes them with the team. It prints everything it removed, revoked\n"
      "clients of the team included.\n",
      {
          {"add", 1, 1, {"--upstreams"}, {}, {}, "keywayctl team add NAME [--upstreams a,b,...]",
           Store::kCredentials, Input::kNone, cmdTeamAdd},
          {"set", 1, 1, {"--upstreams"}, {"--all-upstreams"}, {},
           "keywayctl team set NAME --upstreams a,b,... | --all-upstreams", Store::kCredentials,
           Input::kNone, cmdTeamSet, checkAccessOptions},
          {"list", 0, 0, {}, {"--json"}, {}, "keywayctl team list [--json]", Store::kCredentials,
           Input::kNone, cmdTeamList},
          {"rm", 1, 1, {}, {"--force"}, {}, "keywayctl team rm NAME [--force]",
           Store::kCredentials, Input::kNone, cmdTeamRm},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
