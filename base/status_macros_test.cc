#include "base/status_macros.h"

#include "base/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace nimble {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::HasSubstr;

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError(absl::StrCat(x, " is odd"));
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  NIMBLE_ASSIGN_OR_RETURN(int half, Half(x));
  NIMBLE_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

absl::Status CheckEven(int x) {
  NIMBLE_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, AssignOrReturnPropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_THAT(Quarter(6), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3 is odd")));
  EXPECT_THAT(Quarter(5), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 is odd")));
}

TEST(StatusMacrosTest, ReturnIfErrorStopsAtError) {
  EXPECT_THAT(CheckEven(4), IsOk());
  EXPECT_THAT(CheckEven(3), StatusIs(absl::StatusCode::kInvalidArgument, "3 is odd"));
}

TEST(StatusMacrosTest, AnnotateKeepsCodeAndPrefixesContext) {
  absl::Status annotated = Annotate(absl::NotFoundError("no such file"), "loading model 'bert'");
  EXPECT_THAT(annotated,
              StatusIs(absl::StatusCode::kNotFound, "loading model 'bert': no such file"));
  EXPECT_THAT(Annotate(absl::OkStatus(), "ignored"), IsOk());
}

}  // namespace
}  // namespace nimble
