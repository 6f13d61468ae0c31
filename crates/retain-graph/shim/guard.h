// The error convention of retain's shims: every entry point runs its body through `guarded`,
// which turns a C++ exception into a message in the caller's buffer and a status of 1 (a C++
// exception must never unwind into Rust).
#pragma once

#include <cstring>
#include <exception>

namespace retain_shim {

inline void write_error(const char* what, char* error, size_t len) {
  if (error == nullptr || len == 0) return;
  std::strncpy(error, what, len - 1);
  error[len - 1] = '\0';
}

template <typename F>
int guarded(char* error, size_t len, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, len);
  } catch (...) {
    write_error("unknown C++ exception", error, len);
  }
  return 1;
}

}  // namespace retain_shim
