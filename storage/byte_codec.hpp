// Little-endian fixed-width integers and u32-length-prefixed strings: the byte layer under the
// credential records (record_codec) and the backup file (backup_format). The reader fails (returns
// false) at the first read past its input and never allocates beyond the input's own size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keyway::storage {

class ByteWriter {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void raw(std::string_view s) { out_.append(s); }
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void list(const std::vector<std::string>& items) {
    u32(static_cast<uint32_t>(items.size()));
    for (const auto& s : items) str(s);
  }
  const std::string& bytes() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}
  bool u8(uint8_t& v) {
    if (pos_ + 1 > in_.size()) return false;
    v = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool boolean(bool& v) {
    uint8_t b = 0;
    if (!u8(b) || b > 1) return false;
    v = b == 1;
    return true;
  }
  bool u32(uint32_t& v) {
    uint64_t wide = 0;
    if (!fixed(4, wide)) return false;
    v = static_cast<uint32_t>(wide);
    return true;
  }
  bool u64(uint64_t& v) { return fixed(8, v); }
  bool i64(int64_t& v) {
    uint64_t u = 0;
    if (!fixed(8, u)) return false;
    v = static_cast<int64_t>(u);
    return true;
  }
  // Exactly `n` bytes, as a view into the input.
  bool raw(size_t n, std::string_view& s) {
    if (n > in_.size() - pos_) return false;
    s = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool str(std::string_view& s) {
    uint32_t len = 0;
    return u32(len) && raw(len, s);
  }
  bool str(std::string& s) {
    std::string_view view;
    if (!str(view)) return false;
    s.assign(view);
    return true;
  }
  // At most `max_entries`; each entry takes at least its 4-byte length, so a count the input
  // cannot hold is refused before anything is reserved.
  bool list(std::vector<std::string>& items, uint32_t max_entries) {
    uint32_t n = 0;
    if (!u32(n) || n > max_entries || n > (in_.size() - pos_) / 4) return false;
    items.clear();
    items.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      std::string s;
      if (!str(s)) return false;
      items.push_back(std::move(s));
    }
    return true;
  }
  bool atEnd() const { return pos_ == in_.size(); }
  size_t position() const { return pos_; }

 private:
  bool fixed(int bytes, uint64_t& v) {
    if (in_.size() - pos_ < static_cast<size_t>(bytes)) return false;
    v = 0;
    for (int i = 0; i < bytes; ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    }
    pos_ += static_cast<size_t>(bytes);
    return true;
  }

  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace keyway::storage
