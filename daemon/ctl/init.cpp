// keywayctl init: state directory, master key and credential store, each only if absent.
#include "daemon/ctl/groups.hpp"

#include <iostream>

#include "storage/lmdb_credential_store.hpp"

namespace keyway::daemon::ctl {
namespace {

int cmdInit(Context& c) {
  auto report = storage::initStateDir(c.config->state_dir, c.config->master_key_file);
  if (!report) return c.fail(report.error());
  c.out << "configuration " << c.config_path << " (" << c.config_source << ")\n"
        << (report->created_state_dir ? "created state directory " : "state directory ")
        << c.config->state_dir << "\n"
        << (report->created_master_key ? "created master key " : "master key ")
        << c.config->master_key_file
        << (report->created_master_key ? " (mode 0600; back it up: without it the store is "
                                         "unreadable)"
                                       : " (matches the store)")
        << "\n"
        << (report->created_store ? "created credential store " : "credential store ")
        << report->env_path << "\n";
  if (!report->created_state_dir && !report->created_master_key && !report->created_store) {
    c.out << "already initialised; nothing changed\n";
  }
  if (c.config->state_dir.empty() || c.config->state_dir[0] != '/') {
    // The store keywayd uses is the one under ITS working directory.
    c.err << "keywayctl: note: state_dir " << c.config->state_dir
          << " is relative to the working directory; keywayd must start in the same directory "
             "to use this store\n";
  }
  return kCtlExitOk;
}

}  // namespace

const CommandGroup& initGroup() {
  static const CommandGroup group = {
      "init",
      "usage: keywayctl init\n"
      "\n"
      "Creates the state directory (mode 0700), the master key file (mode 0600, 32 random\n"
      "bytes) and the credential store, each only if absent. On an initialised directory it\n"
      "checks that the master key matches the store. It uses the configuration keywayd runs\n"
      "with (--config FILE, $KEYWAY_CONFIG or the installed one; see keywayctl --help), so\n"
      "that it creates the store keywayd reads.\n",
      {
          // The store is what init creates, so it is not opened beforehand.
          {"", 0, 0, {}, {}, {}, "keywayctl init", Store::kNone, Input::kNone, cmdInit},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl
