// Internal to daemon/ctl/: a test-only hook that makes keywayctl kill itself (SIGKILL) at a named
// step of a multi-step write, so that the crash tests hit each step exactly instead of by timing.
//
//   KEYWAYCTL_TEST_CRASH_AT=rekey:committed keywayctl rekey
//
// Steps: rekey:next-key-written, rekey:resealed, rekey:committed, rekey:renamed,
// restore:before-commit. Harmless outside tests: it can only do what `kill -9` of keywayctl at
// that moment does, which every step is built to survive (docs/operations.md), and it reads
// nothing else from the environment.
#pragma once

#include <signal.h>

#include <cstdlib>
#include <string_view>

namespace keyway::daemon::ctl {

inline void crashHereIfAsked(std::string_view step) {
  const char* wanted = std::getenv("KEYWAYCTL_TEST_CRASH_AT");
  if (wanted != nullptr && step == wanted) ::raise(SIGKILL);
}

}  // namespace keyway::daemon::ctl
