// Internal to daemon/ctl/: the running keywayd as keywayctl sees it (GET /_keyway/status on the
// main listener) and the store keywayctl itself edits, compared. Used by `status` (status.cpp)
// and `doctor` (doctor.cpp).
#pragma once

#include <rapidjson/document.h>

#include <cstdint>
#include <optional>
#include <string>

#include "core/config.hpp"
#include "daemon/ctl/context.hpp"
#include "daemon/ctl/ctl.hpp"

namespace keyway::daemon::ctl {

// `keywayctl status` within the common exit codes (docs/cli.md): no keywayd to ask is a runtime
// failure (2); keywayd reading another store than the one this keywayctl edits is wrong input (the
// configuration given to keywayctl), 1, so that scripts stop there too.
inline constexpr int kStatusExitNotRunning = kCtlExitFailure;
inline constexpr int kStatusExitOtherStore = kCtlExitUsage;

// Which credential store: its directory's path (absolute) and identity. Equal (device, inode) is
// the same directory whatever path leads there (symlinks, systemd's /var/lib/private, bind
// mounts); 0/0 when it does not exist (then paths are compared).
struct StoreIdentity {
  std::string path;
  uint64_t device = 0;
  uint64_t inode = 0;
};
bool sameStore(const StoreIdentity& a, const StoreIdentity& b);

// The store this keywayctl edits. Never creates anything: the store is opened (for its
// generation) only when its directory exists.
struct LocalStore {
  std::optional<std::string> config_file;  // absolute; none = embedded default
  std::string state_dir;                   // absolute
  std::string master_key_file;             // absolute
  StoreIdentity store;
  bool exists = false;
  std::optional<uint64_t> generation;  // when the store could be opened
  std::string problem;                 // why it could not, else ""
};
LocalStore describeLocalStore(const Context& c);

// The check of --address HOST:PORT (a usage error message, or nullopt).
std::optional<std::string> checkDaemonAddressOption(const Args& args);

// Where keywayctl looks for keywayd: --address, else the configuration's `listen` with a
// wildcard host taken as loopback. Nullopt when that is port 0 (any free port: unknowable).
std::optional<std::string> daemonAddress(const core::ListenAddress& listen);

enum class Reach {
  kAnswered,    // `doc` holds keywayd's status document
  kNotRunning,  // nothing answers (refused, timed out, no such host)
  kFailed,      // something answers, but not with a status document (problem says what)
  kNoAddress,   // the configuration's listen port is 0 and no --address was given
};

struct DaemonAnswer {
  Reach reach = Reach::kFailed;
  std::string address;  // host:port asked
  std::string problem;  // for everything but kAnswered
  rapidjson::Document doc;
  // From `doc` (kAnswered):
  StoreIdentity store;
  std::optional<uint64_t> generation;
  std::string state_dir;
  std::optional<std::string> config_file;  // none: keywayd runs on its embedded default
};
DaemonAnswer askDaemon(const Context& c);

// Members of keywayd's status document, tolerant of absent or mistyped ones ("" / 0 / nullopt).
std::string jsonString(const rapidjson::Value& object, const char* name);
std::optional<int64_t> jsonInt(const rapidjson::Value& object, const char* name);
bool jsonBool(const rapidjson::Value& object, const char* name);
const rapidjson::Value* jsonMember(const rapidjson::Value& object, const char* name);

// The next step when keywayctl and keywayd disagree on the store: what to run instead.
std::string otherStoreHint(const DaemonAnswer& daemon, const LocalStore& local);

// "3d 4h", "2h 5m", "42s".
std::string formatDuration(int64_t seconds);

}  // namespace keyway::daemon::ctl
