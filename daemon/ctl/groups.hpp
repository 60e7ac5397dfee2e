// Internal to daemon/ctl/: the command groups of docs/cli.md, one file of this folder each.
#pragma once

#include "daemon/ctl/context.hpp"

namespace keyway::daemon::ctl {

const CommandGroup& initGroup();      // init.cpp
const CommandGroup& teamGroup();      // team.cpp
const CommandGroup& clientGroup();    // client.cpp
const CommandGroup& secretGroup();    // secret.cpp
const CommandGroup& bosaUserGroup();  // bosa_user.cpp
const CommandGroup& cacheGroup();     // cache.cpp
const CommandGroup& schemasGroup();   // schemas.cpp
const CommandGroup& statusGroup();    // status.cpp
const CommandGroup& doctorGroup();    // doctor.cpp
const CommandGroup& rekeyGroup();     // rekey.cpp
const CommandGroup& backupGroup();    // backup.cpp
const CommandGroup& restoreGroup();   // backup.cpp
const CommandGroup& fleetGroup();     // fleet.cpp

}  // namespace keyway::daemon::ctl
