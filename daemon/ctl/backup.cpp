// keywayctl backup and restore: a sealed copy of the credential store, and putting one back.
#include "daemon/ctl/groups.hpp"

#include <iostream>

#include "daemon/ctl/text.hpp"
#include "daemon/ctl/test_crash.hpp"
#include "storage/credential_admin.hpp"

namespace keyway::daemon::ctl {
namespace {

std::string describeCounts(const storage::StoreCounts& n) {
  return std::to_string(n.teams) + " team(s), " + std::to_string(n.clients) + " client(s), " +
         std::to_string(n.secrets) + " secret(s), " + std::to_string(n.bosa_users) +
         " BOSA user(s)";
}

JsonObject countsJson(const storage::StoreCounts& n) {
  return JsonObject()
      .num("teams", n.teams)
      .num("clients", n.clients)
      .num("secrets", n.secrets)
      .num("bosa_users", n.bosa_users);
}

std::string change(const char* what, size_t before, size_t after) {
  return std::string(what) + " " + std::to_string(before) + " -> " + std::to_string(after);
}

int cmdBackup(Context& c) {
  const std::string& file = c.word(1);
  auto report = storage::backupCredentialStore(c.config->state_dir, c.config->master_key_file,
                                               file, c.flag("--force"));
  if (!report) return c.fail(report.error());
  if (c.flag("--json")) {
    c.out << JsonObject()
                 .str("file", file)
                 .num("bytes", report->bytes)
                 .num("generation", report->generation)
                 .str("key_id", report->key_id)
                 .object("counts", countsJson(report->counts))
                 .text()
          << "\n";
    return kCtlExitOk;
  }
  c.out << "wrote backup " << file << " (" << formatBytes(report->bytes) << ", mode 0600): "
        << describeCounts(report->counts) << "\n"
        << "store generation " << report->generation << ", sealed under master key id "
        << report->key_id << "; restoring it needs that key (" << c.config->master_key_file
        << "): keep a copy of the key, apart from the backup\n";
  return kCtlExitOk;
}

int cmdRestore(Context& c) {
  if (c.config->fleet) {
    return c.fail("keywayctl restore works on a single host's store; this configuration has a fleet (etcd is the "
                  "store of record): see docs/fleet.md, \"Keys, backups and restores\"",
                  kCtlExitUsage);
  }
  const std::string& file = c.word(1);
  storage::RestoreOptions options;
  options.backup_key_file = c.option("--key-file").value_or("");
  options.saved_copy_dir = c.config->state_dir;
  options.before_commit = [] { crashHereIfAsked("restore:before-commit"); };
  auto report = storage::restoreCredentialStore(c.config->state_dir, c.config->master_key_file,
                                                file, options);
  if (!report) return c.fail(report.error());
  const auto& b = report->before;
  const auto& a = report->after;
  if (c.flag("--json")) {
    JsonObject json;
    json.str("file", file)
        .num("backup_generation", report->backup_generation)
        .str("backup_created", formatTime(report->backup_created_unix))
        .boolean("resealed", report->resealed)
        .object("before", countsJson(b))
        .object("after", countsJson(a))
        .num("generation_before", report->generation_before)
        .num("generation_after", report->generation_after);
    if (report->saved_copy.empty()) {
      json.null("saved_copy");
    } else {
      json.str("saved_copy", report->saved_copy);
    }
    c.out << json.text() << "\n";
    return kCtlExitOk;
  }
  c.out << "restored " << file << " (taken " << formatTime(report->backup_created_unix)
        << " at store generation " << report->backup_generation << ")"
        << (report->resealed ? ", re-sealed under this store's master key" : "") << "\n"
        << "replaced: " << change("teams", b.teams, a.teams) << ", "
        << change("clients", b.clients, a.clients) << ", "
        << change("secrets", b.secrets, a.secrets) << ", "
        << change("BOSA users", b.bosa_users, a.bosa_users) << "\n"
        << "store generation " << report->generation_before << " -> " << report->generation_after
        << "; a running keywayd serves the restored records from its next request\n";
  if (!report->saved_copy.empty()) {
    c.out << "saved what was replaced to " << report->saved_copy
          << " (keywayctl restore it to undo)\n";
  }
  return kCtlExitOk;
}

}  // namespace

const CommandGroup& backupGroup() {
  static const CommandGroup group = {
      "backup",
      "usage: keywayctl backup FILE [--force] [--json]\n"
      "\n"
      "Writes a consistent copy of the credential store (teams, clients, secrets, BOSA users)\n"
      "to FILE, mode 0600, while keywayd keeps running. Values stay sealed under the master key:\n"
      "the file holds no secret in plaintext, and restoring it needs the same master key (keep\n"
      "a copy of the key file, apart from the backup). Minted BOSA user tokens and the response\n"
      "cache are left out: keywayd makes them again. An existing FILE is kept unless --force.\n"
      "--json prints one object: file, bytes, generation, key_id, counts.\n",
      {
          {"", 1, 1, {}, {"--force", "--json"}, {}, "keywayctl backup FILE [--force] [--json]",
           Store::kNone, Input::kNone, cmdBackup},
      }};
  return group;
}

const CommandGroup& restoreGroup() {
  static const CommandGroup group = {
      "restore",
      "usage: keywayctl restore FILE [--key-file OLD_KEY_FILE] [--json]\n"
      "\n"
      "Replaces every team, client, secret and BOSA user of the credential store with those of\n"
      "a backup, in one transaction: a running keywayd serves them from its next request, and a\n"
      "crash leaves the old records or the new ones. Says what it replaced and saves it in the\n"
      "state directory (credentials-replaced-TIME-gGENERATION.backup). Refuses a file that is\n"
      "not an intact backup or is sealed under another master key; --key-file names the key a\n"
      "backup taken before a `keywayctl rekey` was sealed with (its records are re-sealed under\n"
      "the current key).\n"
      "--json prints one object: file, backup_generation, backup_created, resealed, before,\n"
      "after, generation_before, generation_after, saved_copy.\n",
      {
          {"", 1, 1, {"--key-file"}, {"--json"}, {},
           "keywayctl restore FILE [--key-file OLD_KEY_FILE] [--json]", Store::kNone, Input::kNone,
           cmdRestore},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
