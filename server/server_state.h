// State that every RPC handler reads: whether the server is ready or draining.
#pragma once

#include <atomic>
#include <string>

namespace nimble::server {

// Thread-safe: plain atomics, written by the lifecycle owner, read by RPC handlers.
struct ServerState {
  std::string name = "nimble";
  std::string version;
  std::atomic<bool> ready{false};     // started and not draining
  std::atomic<bool> draining{false};  // shutdown began: refuse new work
};

}  // namespace nimble::server
