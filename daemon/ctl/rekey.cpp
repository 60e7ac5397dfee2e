// keywayctl rekey: the credential store re-sealed under a new master key, the key file replaced.
#include "daemon/ctl/groups.hpp"

#include <cstdlib>
#include <iostream>

#include "daemon/ctl/text.hpp"
#include "daemon/ctl/test_crash.hpp"
#include "storage/credential_admin.hpp"

namespace keyway::daemon::ctl {
namespace {

// Whether keywayctl was pointed at the key through $CREDENTIALS_DIRECTORY, as operators of the
// systemd unit do (docs/operations.md): the running service then holds the copy systemd made.
bool keyFromCredentialsDirectory(const std::string& key_file) {
  const char* dir = std::getenv("CREDENTIALS_DIRECTORY");
  if (dir == nullptr || *dir == '\0') return false;
  const std::string prefix = std::string(dir) + (std::string(dir).back() == '/' ? "" : "/");
  return key_file.compare(0, prefix.size(), prefix) == 0;
}

int cmdRekey(Context& c) {
  if (c.config->fleet) {
    return c.fail("keywayctl rekey works on a single host's store; this configuration has a fleet (etcd is the "
                  "store of record): see docs/fleet.md, \"Keys, backups and restores\"",
                  kCtlExitUsage);
  }
  const std::string& key_file = c.config->master_key_file;
  auto report = storage::rekeyCredentialStore(
      c.config->state_dir, key_file, [](storage::RekeyStep step) {
        switch (step) {
          case storage::RekeyStep::kNextKeyWritten: return crashHereIfAsked("rekey:next-key-written");
          case storage::RekeyStep::kResealed: return crashHereIfAsked("rekey:resealed");
          case storage::RekeyStep::kCommitted: return crashHereIfAsked("rekey:committed");
          case storage::RekeyStep::kRenamed: return crashHereIfAsked("rekey:renamed");
        }
      });
  if (!report) return c.fail(report.error());
  const bool restart_needed = keyFromCredentialsDirectory(key_file);
  if (c.flag("--json")) {
    c.out << JsonObject()
                 .str("old_key_id", report->old_key_id)
                 .str("new_key_id", report->new_key_id)
                 .object("resealed", JsonObject()
                                         .num("secrets", report->secrets)
                                         .num("bosa_users", report->bosa_users)
                                         .num("user_tokens", report->user_tokens))
                 .num("generation", report->generation)
                 .str("key_file", key_file)
                 .boolean("restart_needed", restart_needed)
                 .text()
          << "\n";
    return kCtlExitOk;
  }
  c.out << "re-sealed " << report->secrets << " secret(s), " << report->bosa_users
        << " BOSA user secret(s) and " << report->user_tokens
        << " minted user token(s) under a new master key (key id " << report->old_key_id
        << " -> " << report->new_key_id << ")\n"
        << "replaced master key file " << key_file
        << " (mode 0600); the old key no longer opens the store\n"
        << "store generation " << report->generation
        << "; client tokens stay valid; a keywayd that reads " << key_file
        << " uses the new key from its next request\n"
        << "backups taken before now need the old key (keywayctl restore FILE --key-file OLD_KEY)\n";
  if (restart_needed) {
    c.out << "keywayd under systemd holds the copy of the old key that LoadCredential= made at "
             "start: run `systemctl restart keyway` now (until then it answers 503)\n";
  }
  return kCtlExitOk;
}

}  // namespace

const CommandGroup& rekeyGroup() {
  static const CommandGroup group = {
      "rekey",
      "usage: keywayctl rekey [--json]\n"
      "\n"
      "Rotates the master key: re-seals every secret, BOSA user secret and minted user token\n"
      "under a new random key in one transaction, then replaces the master key file with it\n"
      "(mode 0600). The old key no longer opens the store. Client tokens stay valid and the\n"
      "response cache stays warm. A crash at any point leaves the old key and records or the\n"
      "new ones; the next keywayctl or keywayd run finishes or rolls back what was begun.\n"
      "A running keywayd that reads the key file follows at its next request; one that takes\n"
      "the key through systemd's LoadCredential= needs `systemctl restart keyway` (run keywayctl\n"
      "with CREDENTIALS_DIRECTORY naming the directory the credential is loaded from).\n"
      "Backups taken before need the old key: copy the key file first if you keep them.\n"
      "--json prints one object: old_key_id, new_key_id, resealed, generation, key_file,\n"
      "restart_needed.\n",
      {
          // The store is opened, and written, by the rekey itself.
          {"", 0, 0, {}, {"--json"}, {}, "keywayctl rekey [--json]", Store::kNone, Input::kNone,
           cmdRekey},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
