// Status propagation for the whole project. Our code never throws; fallible calls return
// absl::Status / absl::StatusOr<T> and callers propagate them with these macros.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define NIMBLE_CONCAT_INNER_(a, b) a##b
#define NIMBLE_CONCAT_(a, b) NIMBLE_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function when it is not OK.
#define NIMBLE_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status nimble_status_ = (expr);          \
    if (!nimble_status_.ok()) return nimble_status_; \
  } while (false)

// `NIMBLE_ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns from a StatusOr or returns its
// error.
#define NIMBLE_ASSIGN_OR_RETURN(lhs, rexpr) \
  NIMBLE_ASSIGN_OR_RETURN_IMPL_(NIMBLE_CONCAT_(nimble_statusor_, __LINE__), lhs, rexpr)

#define NIMBLE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = *std::move(statusor)

namespace nimble {

// Prefixes `status`'s message with `context` ("loading model 'bert': <message>"), keeping the
// code. Used at layer boundaries so an error says where it happened.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

}  // namespace nimble
