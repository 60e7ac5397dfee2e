// keywayctl secret set|list|rm: the real upstream credentials keyway injects, shared or per team.
#include "daemon/ctl/groups.hpp"

#include <algorithm>
#include <iostream>

#include "daemon/ctl/secret_input.hpp"
#include "storage/names.hpp"

namespace keyway::daemon::ctl {
namespace {

std::string scopeText(const std::string& team) {
  return team.empty() ? std::string("shared") : "team '" + team + "'";
}

int cmdSecretSet(Context& c) {
  const std::string& name = c.word(2);
  const std::string team = c.option("--team").value_or("");
  auto valid = storage::validateName("secret", name);
  if (!valid) return c.fail(valid.error());
  if (!team.empty()) {
    if (auto rc = checkTeams(c, {team})) return *rc;
  }
  auto input = readSecret(c.in, c.err, "secret value");
  if (!input.value) return c.fail(input.error, kCtlExitUsage);
  if (int rc = reportChange(c, c.store->setSecret(name, team, *input.value),
                            "stored secret '" + name + "' (" + scopeText(team) + ")");
      rc != kCtlExitOk) {
    return rc;
  }
  // A hint only: a name no upstream injects is probably a typo.
  std::vector<std::string> injected;
  for (const auto& u : c.config->upstreams) {
    if (!u.credential.secret.empty() &&
        std::find(injected.begin(), injected.end(), u.credential.secret) == injected.end()) {
      injected.push_back(u.credential.secret);
    }
  }
  if (!injected.empty() && std::find(injected.begin(), injected.end(), name) == injected.end()) {
    c.err << "keywayctl: note: no configured upstream injects '" << name
          << "' (they use: " << joinList(injected) << ")\n";
  }
  return kCtlExitOk;
}

int cmdSecretList(Context& c) {
  auto secrets = c.store->listSecrets();
  std::string none = "no secrets; set one with: keywayctl secret set NAME [--team TEAM] < value";
  if (auto rc = filterByTeams(c, secrets, none, "no secrets of team(s) ",
                              [](const core::SecretInfo& s, const auto& listed) {
                                return listed(s.team);
                              })) {
    return *rc;
  }
  if (c.option("--team")) none += " (shared ones apply to them)";
  return printListing(
      c, secrets, none, {"NAME", "SCOPE", "UPDATED"},
      [](const core::SecretInfo& s) {
        return std::vector<std::string>{s.name, s.team.empty() ? "shared" : "team:" + s.team,
                                        formatTime(s.updated_unix)};
      },
      [](const core::SecretInfo& s) {
        return JsonObject()
            .str("name", s.name)
            .str("scope", s.team.empty() ? "shared" : "team")
            .strOrNull("team", s.team)
            .time("updated", s.updated_unix);
      });
}

int cmdSecretRm(Context& c) {
  const std::string team = c.option("--team").value_or("");
  return reportChange(c, c.store->removeSecret(c.word(2), team),
                      "removed secret '" + c.word(2) + "' (" + scopeText(team) + ")");
}

}  // namespace

const CommandGroup& secretGroup() {
  static const CommandGroup group = {
      "secret",
      "usage: keywayctl secret set NAME [--team TEAM]\n"
      "       keywayctl secret list [--team T1[,T2...]] [--json]\n"
      "       keywayctl secret rm NAME [--team TEAM]\n"
      "\n"
      "Secrets are the real upstream credentials, e.g. bundleup.api_key, bosa.api_key,\n"
      "bundleiq.api_key. Without --team a secret is shared by all teams; a team's own secret\n"
      "overrides the shared one for its clients. The value is read from standard input (one\n"
      "trailing newline stripped), never from arguments:\n"
      "  printf '%s' \"$BOSA_KEY\" | keywayctl secret set bosa.api_key\n"
      "`secret list` shows names, scopes and update times, never values; --team shows only\n"
      "those teams' own secrets.\n",
      {
          {"set", 1, 1, {"--team"}, {}, {}, "keywayctl secret set NAME [--team TEAM] < value",
           Store::kCredentials, Input::kSecret, cmdSecretSet},
          {"list", 0, 0, {"--team"}, {"--json"}, {},
           "keywayctl secret list [--team T1[,T2...]] [--json]", Store::kCredentials,
           Input::kNone, cmdSecretList},
          {"rm", 1, 1, {"--team"}, {}, {}, "keywayctl secret rm NAME [--team TEAM]",
           Store::kCredentials, Input::kNone, cmdSecretRm},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
