// Internal to daemon/ctl/: one JSON object written field by field, for `--json` output.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/log.hpp"

namespace keyway::daemon::ctl {

class JsonObject {
 public:
  JsonObject& str(std::string_view name, std::string_view value) {
    appendJsonString(key(name), value);
    return *this;
  }
  JsonObject& num(std::string_view name, uint64_t value) {
    key(name) += std::to_string(value);
    return *this;
  }
  JsonObject& boolean(std::string_view name, bool value) {
    key(name) += value ? "true" : "false";
    return *this;
  }
  JsonObject& null(std::string_view name) {
    key(name) += "null";
    return *this;
  }
  JsonObject& object(std::string_view name, const JsonObject& value) {
    key(name) += value.text();
    return *this;
  }
  std::string text() const { return out_ + "}"; }

 private:
  std::string& key(std::string_view name) {
    out_ += out_.size() == 1 ? "" : ",";
    appendJsonString(out_, name);
    out_ += ":";
    return out_;
  }
  std::string out_ = "{";
};

}  // namespace keyway::daemon::ctl
