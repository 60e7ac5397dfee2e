// keywayctl: the admin CLI's process entry point; the commands are in daemon/ctl/.
#include <sys/stat.h>

#include <iostream>
#include <string>
#include <vector>

#include "daemon/ctl/ctl.hpp"

int main(int argc, char** argv) {
  ::umask(077);  // whatever keywayctl creates is private to its owner
  std::vector<std::string> args(argv + 1, argv + argc);
  const int rc = keyway::daemon::runCtl(std::move(args), std::cin, std::cout, std::cerr);
  std::cout.flush();
  return rc;
}
