// keywayctl client add|list|revoke: the apps that call keyway, each with its own kw_ token.
#include "daemon/ctl/groups.hpp"

#include <iostream>

namespace keyway::daemon::ctl {
namespace {

int cmdClientAdd(Context& c) {
  const std::string team = *c.option("--team");
  auto token = c.store->addClient(c.word(2), team);
  if (!token) return c.fail(token.error());
  c.out << "added client '" << c.word(2) << "' to team '" << team << "'\n"
        << "its token is shown only this once; store it now (keyway keeps only a hash):\n"
        << token->view() << "\n";
  c.out.flush();
  return kCtlExitOk;
}

int cmdClientList(Context& c) {
  return printListing(c, c.store->listClients(),
                      "no clients; add one with: keywayctl client add NAME --team TEAM",
                      {"NAME", "TEAM", "STATUS", "CREATED"}, [](const core::ClientRecord& cl) {
                        return std::vector<std::string>{cl.name, cl.team,
                                                        cl.revoked ? "revoked" : "active",
                                                        formatTime(cl.created_unix)};
                      });
}

int cmdClientRevoke(Context& c) {
  return reportChange(c, c.store->revokeClient(c.word(2)),
                      "revoked client '" + c.word(2) + "'; its token no longer works");
}

}  // namespace

const CommandGroup& clientGroup() {
  static const CommandGroup group = {
      "client",
      "usage: keywayctl client add NAME --team TEAM\n"
      "       keywayctl client list\n"
      "       keywayctl client revoke NAME\n"
      "\n"
      "`client add` prints the new client token (kw_...) once, alone on the last line; only a\n"
      "keyed hash of it is stored. `client revoke` makes the token stop working at once.\n",
      {
          {"add", 1, 1, {"--team"}, {}, {"--team"}, "keywayctl client add NAME --team TEAM",
           Store::kCredentials, Input::kNone, cmdClientAdd},
          {"list", 0, 0, {}, {}, {}, "keywayctl client list", Store::kCredentials, Input::kNone,
           cmdClientList},
          {"revoke", 1, 1, {}, {}, {}, "keywayctl client revoke NAME", Store::kCredentials,
           Input::kNone, cmdClientRevoke},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
