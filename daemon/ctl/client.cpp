// keywayctl client add|rotate|list|revoke|rm: the apps that call keyway, each with its own kw_
// token.
#include "daemon/ctl/groups.hpp"

#include <algorithm>
#include <ctime>
#include <iostream>

#include "core/config_parse.hpp"

namespace keyway::daemon::ctl {
namespace {

// The token alone on the last line, for scripts (`| tail -n1`).
void printNewToken(Context& c, const core::SecretString& token) {
  c.out << "its token is shown only this once; store it now (keyway keeps only a hash):\n"
        << token.view() << "\n";
  c.out.flush();
}

int cmdClientAdd(Context& c) {
  const std::string team = *c.option("--team");
  auto token = c.store->addClient(c.word(2), team);
  if (!token) return c.fail(token.error());
  c.out << "added client '" << c.word(2) << "' to team '" << team << "'\n";
  printNewToken(c, *token);
  return kCtlExitOk;
}

// --grace: a duration as in the configuration ("90s", "15m", "24h") or "0"; whole seconds,
// rounded up.
std::optional<int> readGrace(Context& c, int64_t* seconds) {
  *seconds = 0;
  auto given = c.option("--grace");
  if (!given || *given == "0") return std::nullopt;
  auto parsed = core::parseDuration(*given);
  if (!parsed) return c.fail("--grace: " + parsed.error().message, kCtlExitUsage);
  *seconds = (parsed->count() + 999) / 1000;
  if (*seconds > core::kMaxRotationGraceSeconds) {
    return c.fail("--grace: at most " + std::to_string(core::kMaxRotationGraceSeconds / 3600) +
                      "h (30 days)",
                  kCtlExitUsage);
  }
  return std::nullopt;
}

int cmdClientRotate(Context& c) {
  const std::string& name = c.word(2);
  int64_t grace = 0;
  if (auto rc = readGrace(c, &grace)) return *rc;
  auto token = c.store->rotateClient(name, grace);
  if (!token) return c.fail(token.error());
  c.out << "rotated the token of client '" << name << "'; ";
  if (grace > 0) {
    c.out << "the old token keeps working until "
          << formatTime(static_cast<int64_t>(std::time(nullptr)) + grace) << " (--grace "
          << *c.option("--grace") << ")\n";
  } else {
    c.out << "the old token stopped working now\n";
  }
  printNewToken(c, *token);
  return kCtlExitOk;
}

// The end of the previous token's grace period while it is still running, else 0.
int64_t graceUntil(const core::ClientRecord& client, int64_t now) {
  return client.previous_token_until_unix > now ? client.previous_token_until_unix : 0;
}

int cmdClientList(Context& c) {
  auto clients = c.store->listClients();
  std::string none = "no clients; add one with: keywayctl client add NAME --team TEAM";
  if (auto rc = filterByTeams(c, clients, none, "no clients in team(s) ",
                              [](const core::ClientRecord& cl, const auto& listed) {
                                return listed(cl.team);
                              })) {
    return *rc;
  }
  const auto now = static_cast<int64_t>(std::time(nullptr));
  return printListing(
      c, clients, none, {"NAME", "TEAM", "STATUS", "CREATED", "ROTATED"},
      [now](const core::ClientRecord& cl) {
        std::string status = cl.revoked ? "revoked" : "active";
        if (const int64_t until = graceUntil(cl, now); until != 0 && !cl.revoked) {
          status += ", old token until " + formatTime(until);
        }
        return std::vector<std::string>{cl.name, cl.team, status, formatTime(cl.created_unix),
                                        formatTime(cl.rotated_unix)};
      },
      [now](const core::ClientRecord& cl) {
        return JsonObject()
            .str("name", cl.name)
            .str("team", cl.team)
            .str("status", cl.revoked ? "revoked" : "active")
            .time("created", cl.created_unix)
            .time("rotated", cl.rotated_unix)
            .time("previous_token_valid_until", cl.revoked ? 0 : graceUntil(cl, now));
      });
}

int cmdClientRevoke(Context& c) {
  return reportChange(c, c.store->revokeClient(c.word(2)),
                      "revoked client '" + c.word(2) + "'; its token no longer works");
}

int cmdClientRm(Context& c) {
  return reportChange(c, c.store->removeClient(c.word(2), c.flag("--force")),
                      "removed client '" + c.word(2) + "'; its tokens no longer work");
}

}  // namespace

const CommandGroup& clientGroup() {
  static const CommandGroup group = {
      "client",
      "usage: keywayctl client add NAME --team TEAM\n"
      "       keywayctl client rotate NAME [--grace DURATION]\n"
      "       keywayctl client list [--team T1[,T2...]] [--json]\n"
      "       keywayctl client revoke NAME\n"
      "       keywayctl client rm NAME [--force]\n"
      "\n"
      "`client add` prints the new client token (kw_...) once, alone on the last line; only a\n"
      "keyed hash of it is stored. `client rotate` gives the client a new token, printed the\n"
      "same way; the client keeps its name and team. The old token stops working at once, or\n"
      "after --grace (e.g. 15m, 24h; at most 720h) so that apps can switch; a token from before\n"
      "an earlier rotation stops at once. `client revoke` makes every token of the client stop\n"
      "working at once; the client stays listed as revoked. `client rm` deletes a revoked\n"
      "client; an active one only with --force (its token stops working at once).\n",
      {
          {"add", 1, 1, {"--team"}, {}, {"--team"}, "keywayctl client add NAME --team TEAM",
           Store::kCredentials, Input::kNone, cmdClientAdd},
          {"rotate", 1, 1, {"--grace"}, {}, {}, "keywayctl client rotate NAME [--grace DURATION]",
           Store::kCredentials, Input::kNone, cmdClientRotate},
          {"list", 0, 0, {"--team"}, {"--json"}, {},
           "keywayctl client list [--team T1[,T2...]] [--json]", Store::kCredentials,
           Input::kNone, cmdClientList},
          {"revoke", 1, 1, {}, {}, {}, "keywayctl client revoke NAME", Store::kCredentials,
           Input::kNone, cmdClientRevoke},
          {"rm", 1, 1, {}, {"--force"}, {}, "keywayctl client rm NAME [--force]",
           Store::kCredentials, Input::kNone, cmdClientRm},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
