#include "server/infer_codec.h"

#include <cstring>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::server {
namespace {

using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Fixture {
  vm::Executable exe;
  ModelConfigFile config;
};

Fixture Model(vm::DType dtype, std::vector<int64_t> dims = {-1, 2},
              std::vector<std::string> names = {"n", ""}) {
  Fixture f;
  f.exe.inputs.push_back({"x", vm::ValueKind::kTensor, dtype, dims, names});
  f.exe.outputs.push_back({"y", vm::ValueKind::kTensor, dtype, dims, names});
  EXPECT_TRUE(ResolveAgainstModel(f.exe, f.config).ok());
  return f;
}

inference::ModelInferRequest Request(const std::string& datatype, std::vector<int64_t> shape) {
  inference::ModelInferRequest r;
  auto* in = r.add_inputs();
  in->set_name("x");
  in->set_datatype(datatype);
  for (int64_t d : shape) in->add_shape(d);
  return r;
}

TEST(InferCodecTest, RawHalfAndBfloatArriveBitExact) {
  for (auto [dtype, name] :
       {std::pair{vm::DType::kF16, "FP16"}, std::pair{vm::DType::kBF16, "BF16"}}) {
    Fixture f = Model(dtype);
    auto r = Request(name, {1, 2});
    const uint16_t bits[2] = {0x3c00, 0xc000};
    r.add_raw_input_contents(std::string(reinterpret_cast<const char*>(bits), 4));
    NIMBLE_ASSERT_OK_AND_ASSIGN(DecodedRequest d, DecodeRequest(r, f.exe, f.config));
    ASSERT_EQ(d.inputs.size(), 1u);
    EXPECT_EQ(d.inputs[0].dtype(), dtype);
    EXPECT_EQ(d.inputs[0].data<uint16_t>()[1], 0xc000);
    // KServe has no typed field for them.
    auto typed = Request(name, {1, 2});
    typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
    typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(2);
    EXPECT_THAT(DecodeRequest(typed, f.exe, f.config),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("raw_input_contents")));
  }
}

TEST(InferCodecTest, BytesTypedAndRawRoundTrip) {
  Fixture f = Model(vm::DType::kString);
  auto typed = Request("BYTES", {1, 2});
  typed.mutable_inputs(0)->mutable_contents()->add_bytes_contents("hello");
  typed.mutable_inputs(0)->mutable_contents()->add_bytes_contents(std::string("\0b", 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(DecodedRequest d, DecodeRequest(typed, f.exe, f.config));
  EXPECT_EQ(d.inputs[0].data<std::string>()[1], std::string("\0b", 2));

  inference::ModelInferResponse response;
  ASSERT_TRUE(EncodeResponse(f.exe, d.inputs, {0}, &response).ok());
  EXPECT_EQ(response.outputs(0).datatype(), "BYTES");
  const std::string framed = std::string("\5\0\0\0hello\2\0\0\0\0b", 15);
  EXPECT_EQ(response.raw_output_contents(0), framed);

  auto raw = Request("BYTES", {1, 2});
  raw.add_raw_input_contents(framed);
  NIMBLE_ASSERT_OK_AND_ASSIGN(d, DecodeRequest(raw, f.exe, f.config));
  EXPECT_EQ(d.inputs[0].data<std::string>()[0], "hello");
  raw.set_raw_input_contents(0, framed.substr(0, 14));
  EXPECT_THAT(DecodeRequest(raw, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("only 1 remain")));
  raw.set_raw_input_contents(0, framed + "x");
  EXPECT_THAT(DecodeRequest(raw, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 bytes after")));
}

TEST(InferCodecTest, TypedIntegersAreRangeCheckedAndBoolsNormalised) {
  Fixture f = Model(vm::DType::kI8);
  auto r = Request("INT8", {1, 2});
  r.mutable_inputs(0)->mutable_contents()->add_int_contents(-128);
  r.mutable_inputs(0)->mutable_contents()->add_int_contents(300);
  EXPECT_THAT(DecodeRequest(r, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("out of range")));
  Fixture b = Model(vm::DType::kBool);
  auto raw = Request("BOOL", {1, 2});
  raw.add_raw_input_contents(std::string("\0\7", 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(DecodedRequest d, DecodeRequest(raw, b.exe, b.config));
  EXPECT_EQ(d.inputs[0].data<uint8_t>()[1], 1);
}

TEST(InferCodecTest, ShapesParametersAndOutputsAreChecked) {
  Fixture f = Model(vm::DType::kF32);
  auto r = Request("FP32", {3, 2});
  for (int i = 0; i < 6; ++i) r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(i);
  (*r.mutable_parameters())["timeout"].set_int64_param(2500);
  (*r.mutable_parameters())["priority"].set_uint64_param(1);
  NIMBLE_ASSERT_OK_AND_ASSIGN(DecodedRequest d, DecodeRequest(r, f.exe, f.config));
  EXPECT_EQ(d.timeout_us, 2500u);
  EXPECT_EQ(d.priority, 1u);
  EXPECT_THAT(d.outputs, ElementsAre(0));
  EXPECT_THAT(d.inputs[0].shape(), ElementsAre(3, 2));

  auto bad = r;
  (*bad.mutable_parameters())["timeout"].set_int64_param(-1);
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'timeout'")));
  bad = r;
  bad.mutable_inputs(0)->set_shape(1, 3);
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dim 1 is 3")));
  bad = r;
  bad.mutable_inputs(0)->set_shape(0, -3);
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
  bad = r;
  bad.add_raw_input_contents(std::string(24, '\0'));
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("both contents")));
  bad = r;
  bad.add_raw_input_contents("");
  bad.add_raw_input_contents("");
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 entries for 1 inputs")));
  bad = r;
  *bad.add_inputs() = bad.inputs(0);
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("given twice")));
  bad = r;
  bad.add_outputs()->set_name("y");
  bad.add_outputs()->set_name("y");
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("requested twice")));
  // A shape far larger than the data is refused before anything is allocated for it.
  bad = Request("FP32", {int64_t{1} << 40, 2});
  bad.add_raw_input_contents(std::string(8, '\0'));
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("raw_input_contents has 8")));
  bad = Request("FP32", {int64_t{1} << 40, 2});
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("contents hold 0 elements")));
  bad = Request("FP32", {int64_t{1} << 62, 4});
  EXPECT_THAT(DecodeRequest(bad, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("input 'x'")));
  f.config.set_max_batch_size(2);
  EXPECT_THAT(DecodeRequest(r, f.exe, f.config),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("over max_batch_size 2")));
}

}  // namespace
}  // namespace nimble::server
