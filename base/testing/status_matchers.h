// gMock matchers for absl::Status and absl::StatusOr (Debian's Abseil ships none).
//   EXPECT_THAT(DoIt(), IsOk());
//   EXPECT_THAT(Parse(x), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank")));
#pragma once

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "gmock/gmock.h"

namespace nimble::testing {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& status = GetStatus(arg);
  if (!status.ok()) *result_listener << "status is " << status;
  return status.ok();
}

MATCHER_P2(StatusIs, code, message_matcher,
           std::string("has code ") + std::string(absl::StatusCodeToString(code))) {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  if (status.code() != code) return false;
  return ::testing::ExplainMatchResult(message_matcher, std::string(status.message()),
                                       result_listener);
}

MATCHER_P(StatusIs, code, std::string("has code ") + std::string(absl::StatusCodeToString(code))) {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  return status.code() == code;
}

}  // namespace nimble::testing

// ASSERT_OK_AND_ASSIGN(auto x, MakeX()); — fails the test with the status when not OK.
#define NIMBLE_ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  NIMBLE_ASSERT_OK_AND_ASSIGN_IMPL_(NIMBLE_CONCAT_(nimble_test_so_, __LINE__), lhs, rexpr)
#define NIMBLE_ASSERT_OK_AND_ASSIGN_IMPL_(so, lhs, rexpr) \
  auto so = (rexpr);                                      \
  ASSERT_TRUE(so.ok()) << so.status();                    \
  lhs = *std::move(so)
