// A string that holds secret material: move-only, wiped on destruction, never printable.
#pragma once

#include <string>
#include <string_view>

namespace keyway::core {

// Wipes the bytes in a way the compiler may not elide.
void secureWipe(void* data, size_t size);

class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
  explicit SecretString(std::string_view value) : value_(value) {}
  ~SecretString() { wipe(); }

  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  SecretString(SecretString&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }
  SecretString& operator=(SecretString&& other) noexcept {
    if (this != &other) {
      wipe();
      value_ = std::move(other.value_);
      other.wipe();
    }
    return *this;
  }

  // Explicit copy, so every duplication of a secret is visible in review.
  SecretString clone() const { return SecretString(value_); }

  std::string_view view() const { return value_; }
  const char* data() const { return value_.data(); }
  size_t size() const { return value_.size(); }
  bool empty() const { return value_.empty(); }

 private:
  void wipe() {
    // Wipe the whole capacity, not just the size: a moved-from short string keeps its old bytes
    // in the inline buffer with size 0.
    secureWipe(value_.data(), value_.capacity());
    value_.clear();
  }
  std::string value_;
};

// Constant-time comparison of equal-length byte strings (length itself is not secret).
bool constantTimeEquals(std::string_view a, std::string_view b);

}  // namespace keyway::core
