// Internal to daemon/ctl/: the judgements of `keywayctl doctor` (doctor.cpp) that need no file,
// store or network, so that unit tests can pin them down.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/credential_store.hpp"

namespace keyway::daemon::ctl {

enum class CheckResult { kOk, kWarn, kFail, kSkip };
const char* checkResultName(CheckResult result);  // "ok", "warn", "fail", "skip"

// One line of the report: what was checked, how it went, and the command to run next.
struct Check {
  std::string check;     // "daemon", "same_store", "master_key", "state_dir", "store", "secret", "reach", "tls"
  std::string upstream;  // for per-upstream checks
  std::string scope;     // for reach: whose key ("shared", "team:beta"); "" otherwise
  CheckResult result = CheckResult::kOk;
  std::string message;
  std::string next;  // "" when there is nothing to do
};

// 0 when no check failed (warnings do not count), 1 when one did.
int doctorExitCode(const std::vector<Check>& checks);

// What a file mode says of a master key file: kFail when group or others have any access (keyway
// refuses such a key), kWarn for owner bits other than rw/r (0600, 0400), else kOk.
CheckResult judgeKeyMode(mode_t mode);
// What a state directory's mode says: kFail when group or others may write, kWarn when they may
// read or enter, else kOk.
CheckResult judgeStateDirMode(mode_t mode);

// The request doctor sends to an upstream to see it answer with its key. Only requests the
// protocol documents as reads with no side effect (docs/cli.md, "keywayctl doctor"): the
// BundleUp Platform API's integration list, BundleIQ's workspace list, BOSA's discovery (which
// takes no key: BOSA has no read that checks the key alone); for a generic upstream, none: only
// the connection (and its TLS handshake) is made.
struct ProbePlan {
  std::string target;  // path and query after base_url; "" = connect only
  bool send_key = false;
};
ProbePlan probePlanFor(const core::UpstreamConfig& upstream);

// The verdict on the HTTP status a probe got: 401/403 is a refused key (kFail) when one was sent;
// 429 and 5xx warn; any other answer shows the upstream reachable and the key not refused.
struct ProbeVerdict {
  CheckResult result;
  std::string message;
};
ProbeVerdict judgeProbeAnswer(long status, bool key_sent);

// Whether `team` may use `upstream` (team add/set --upstreams, or all).
bool teamUses(const core::TeamRecord& team, const std::string& upstream);

}  // namespace keyway::daemon::ctl
