// The default configuration compiled into keywayd; byte-for-byte equal to conf/keyway.yaml.
#pragma once

namespace keyway::daemon {

const char* embeddedDefaultConfig();

}  // namespace keyway::daemon
