#include "compiler/frontend/onnx/tensor_proto.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nimble::compiler {
namespace {

namespace fs = std::filesystem;
using nimble::onnx::TensorProto;
using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kSuite[] = "../shared/conformance/onnx-node";

template <typename T>
std::vector<T> Values(const vm::Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.num_elements());
}

std::vector<int64_t> Dims(const vm::Tensor& t) {
  return std::vector<int64_t>(t.shape().begin(), t.shape().end());
}

TensorProto Proto(int data_type, std::vector<int64_t> dims, std::string name = "w") {
  TensorProto p;
  p.set_name(std::move(name));
  p.set_data_type(data_type);
  for (int64_t d : dims) p.add_dims(d);
  return p;
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "nimble_onnx_XXXXXX").string();
    char* made = mkdtemp(tmpl.data());
    path_ = made ? fs::path(made) : fs::path();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(DTypeFromOnnxTest, MapsEverySupportedType) {
  const std::vector<std::pair<int, vm::DType>> expected = {
      {1, vm::DType::kF32},         {2, vm::DType::kU8},      {3, vm::DType::kI8},
      {4, vm::DType::kU16},         {5, vm::DType::kI16},     {6, vm::DType::kI32},
      {7, vm::DType::kI64},         {8, vm::DType::kString},  {9, vm::DType::kBool},
      {10, vm::DType::kF16},        {11, vm::DType::kF64},    {12, vm::DType::kU32},
      {13, vm::DType::kU64},        {16, vm::DType::kBF16},   {17, vm::DType::kF8E4M3FN},
      {18, vm::DType::kF8E4M3FNUZ}, {19, vm::DType::kF8E5M2}, {20, vm::DType::kF8E5M2FNUZ},
      {21, vm::DType::kU4},         {22, vm::DType::kI4},     {23, vm::DType::kF4E2M1},
      {24, vm::DType::kF8E8M0},     {25, vm::DType::kU2},     {26, vm::DType::kI2},
  };
  for (const auto& [onnx, dtype] : expected) {
    NIMBLE_ASSERT_OK_AND_ASSIGN(vm::DType got, vm::DTypeFromOnnx(onnx));
    EXPECT_EQ(got, dtype) << onnx;
    EXPECT_EQ(vm::DTypeToOnnx(dtype), onnx);
  }
  EXPECT_EQ(vm::DTypeToOnnx(vm::DType::kInvalid), 0);
  // Every DType but kInvalid has an ONNX type.
  for (int d = 1; d < vm::kNumDTypes; ++d) {
    EXPECT_NE(vm::DTypeToOnnx(static_cast<vm::DType>(d)), 0) << d;
  }
}

TEST(DTypeFromOnnxTest, RejectsUnsupportedAndUnknownTypes) {
  EXPECT_THAT(vm::DTypeFromOnnx(TensorProto::COMPLEX64),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("COMPLEX64 (14)")));
  EXPECT_THAT(vm::DTypeFromOnnx(TensorProto::COMPLEX128),
              StatusIs(absl::StatusCode::kUnimplemented,
                       HasSubstr("ONNX data type COMPLEX128 (15) is not supported by Nimble")));
  EXPECT_THAT(vm::DTypeFromOnnx(0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UNDEFINED")));
  EXPECT_THAT(vm::DTypeFromOnnx(27),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown ONNX data type 27")));
  EXPECT_THAT(vm::DTypeFromOnnx(99),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown ONNX data type 99")));
  EXPECT_EQ(vm::OnnxTypeName(23), "FLOAT4E2M1");
  EXPECT_EQ(vm::OnnxTypeName(26), "INT2");
  EXPECT_EQ(vm::OnnxTypeName(-4), "<-4>");
}

TEST(TensorFromProtoTest, UnpacksFourBitTypes) {
  // INT4 [5]: -1, 7, -8, 0, 3 packed low nibble first; the last byte's high nibble is padding.
  TensorProto i4 = Proto(TensorProto::INT4, {5});
  i4.set_raw_data(std::string("\x7f\x08\x03", 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor ti4, TensorFromProto(i4, ""));
  EXPECT_EQ(ti4.dtype(), vm::DType::kI4);
  EXPECT_THAT(Values<int8_t>(ti4), ElementsAre(-1, 7, -8, 0, 3));

  TensorProto u4 = Proto(TensorProto::UINT4, {2, 2});
  for (int v : {0x21, 0xF0}) u4.add_int32_data(v);  // packed bytes, one per entry
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tu4, TensorFromProto(u4, ""));
  EXPECT_THAT(Values<uint8_t>(tu4), ElementsAre(1, 2, 0, 15));

  // FLOAT4E2M1 keeps the bit pattern (sign in bit 3, no sign extension).
  TensorProto f4 = Proto(TensorProto::FLOAT4E2M1, {2});
  f4.set_raw_data(std::string("\xf2", 1));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tf4, TensorFromProto(f4, ""));
  EXPECT_THAT(Values<uint8_t>(tf4), ElementsAre(0x2, 0xF));
}

TEST(TensorFromProtoTest, UnpacksTwoBitTypes) {
  // INT2 [6]: 1, -2, -1, 0 | 1, 1 -> 0b00'11'10'01, 0b0000'01'01.
  TensorProto i2 = Proto(TensorProto::INT2, {6});
  i2.set_raw_data(std::string("\x39\x05", 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor ti2, TensorFromProto(i2, ""));
  EXPECT_THAT(Values<int8_t>(ti2), ElementsAre(1, -2, -1, 0, 1, 1));

  TensorProto u2 = Proto(TensorProto::UINT2, {3});
  u2.add_int32_data(0x1B);  // 3, 2, 1
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tu2, TensorFromProto(u2, ""));
  EXPECT_THAT(Values<uint8_t>(tu2), ElementsAre(3, 2, 1));
}

TEST(TensorFromProtoTest, ReadsFloat8BitPatterns) {
  TensorProto f8 = Proto(TensorProto::FLOAT8E4M3FN, {3});
  for (int v : {0x38, 0x7E, 0xFF}) f8.add_int32_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t, TensorFromProto(f8, ""));
  EXPECT_EQ(t.dtype(), vm::DType::kF8E4M3FN);
  EXPECT_THAT(Values<uint8_t>(t), ElementsAre(0x38, 0x7E, 0xFF));

  TensorProto e8 = Proto(TensorProto::FLOAT8E8M0, {2});
  e8.set_raw_data(std::string("\x7f\x80", 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor te8, TensorFromProto(e8, ""));
  EXPECT_EQ(te8.dtype(), vm::DType::kF8E8M0);
  EXPECT_THAT(Values<uint8_t>(te8), ElementsAre(0x7F, 0x80));
}

TEST(TensorFromProtoTest, RejectsPackedDataOfTheWrongSize) {
  // 5 INT4 elements take 3 bytes.
  TensorProto short_raw = Proto(TensorProto::INT4, {5});
  short_raw.set_raw_data(std::string("\x7f\x08", 2));
  EXPECT_THAT(TensorFromProto(short_raw, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'w' (i4[5]) has 2 bytes of raw_data, expected 3")));
  TensorProto long_raw = Proto(TensorProto::UINT2, {4});
  long_raw.set_raw_data(std::string("\x00\x00", 2));
  EXPECT_THAT(TensorFromProto(long_raw, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected 1")));
  TensorProto fields = Proto(TensorProto::UINT4, {3});
  fields.add_int32_data(0x21);
  EXPECT_THAT(TensorFromProto(fields, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("has 1 values in int32_data (packed), expected 2")));
  TensorProto f8 = Proto(TensorProto::FLOAT8E5M2, {2});
  f8.add_int32_data(1);
  EXPECT_THAT(TensorFromProto(f8, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("int32_data")));
}

TEST(TensorToProtoTest, PacksSubByteTypes) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t, vm::Tensor::Empty(vm::DType::kI4, {3}));
  const int8_t v[] = {-1, 7, -8};
  std::memcpy(t.raw_data(), v, 3);
  TensorProto p;
  ASSERT_THAT(TensorToProto(t, &p), IsOk());
  EXPECT_EQ(p.data_type(), TensorProto::INT4);
  EXPECT_EQ(p.raw_data(), std::string("\x7f\x08", 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor back, TensorFromProto(p, ""));
  EXPECT_THAT(Values<int8_t>(back), ElementsAre(-1, 7, -8));

  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor u2, vm::Tensor::Empty(vm::DType::kU2, {5}));
  const uint8_t w[] = {3, 2, 1, 0, 2};
  std::memcpy(u2.raw_data(), w, 5);
  TensorProto p2;
  ASSERT_THAT(TensorToProto(u2, &p2), IsOk());
  EXPECT_EQ(p2.raw_data(), std::string("\x1b\x02", 2));
}

TEST(TensorFromProtoTest, ReadsTypedFields) {
  TensorProto f = Proto(TensorProto::FLOAT, {2, 2});
  for (float v : {1.5f, -2.0f, 0.25f, 8.0f}) f.add_float_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tf, TensorFromProto(f, ""));
  EXPECT_EQ(tf.dtype(), vm::DType::kF32);
  EXPECT_THAT(Dims(tf), ElementsAre(2, 2));
  EXPECT_THAT(Values<float>(tf), ElementsAre(1.5f, -2.0f, 0.25f, 8.0f));

  TensorProto i8 = Proto(TensorProto::INT8, {3});
  for (int v : {-128, 5, 127}) i8.add_int32_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor ti8, TensorFromProto(i8, ""));
  EXPECT_THAT(Values<int8_t>(ti8), ElementsAre(-128, 5, 127));

  TensorProto u8 = Proto(TensorProto::UINT8, {2});
  for (int v : {0, 255}) u8.add_int32_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tu8, TensorFromProto(u8, ""));
  EXPECT_THAT(Values<uint8_t>(tu8), ElementsAre(0, 255));

  TensorProto i16 = Proto(TensorProto::INT16, {2});
  for (int v : {-30000, 12}) i16.add_int32_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor ti16, TensorFromProto(i16, ""));
  EXPECT_THAT(Values<int16_t>(ti16), ElementsAre(-30000, 12));

  TensorProto u16 = Proto(TensorProto::UINT16, {1});
  u16.add_int32_data(65535);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tu16, TensorFromProto(u16, ""));
  EXPECT_THAT(Values<uint16_t>(tu16), ElementsAre(65535));

  TensorProto i32 = Proto(TensorProto::INT32, {2});
  for (int v : {-7, 2147483647}) i32.add_int32_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor ti32, TensorFromProto(i32, ""));
  EXPECT_THAT(Values<int32_t>(ti32), ElementsAre(-7, 2147483647));

  TensorProto b = Proto(TensorProto::BOOL, {3});
  for (int v : {0, 1, 7}) b.add_int32_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tb, TensorFromProto(b, ""));
  EXPECT_THAT(Values<bool>(tb), ElementsAre(false, true, true));

  // Half floats travel as their bit patterns: 0x3C00 = 1.0 (f16), 0x3F80 = 1.0 (bf16).
  TensorProto h = Proto(TensorProto::FLOAT16, {2});
  for (int v : {0x3C00, 0xC000}) h.add_int32_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor th, TensorFromProto(h, ""));
  EXPECT_EQ(th.dtype(), vm::DType::kF16);
  EXPECT_THAT(Values<uint16_t>(th), ElementsAre(0x3C00, 0xC000));
  TensorProto bf = Proto(TensorProto::BFLOAT16, {1});
  bf.add_int32_data(0x3F80);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tbf, TensorFromProto(bf, ""));
  EXPECT_EQ(tbf.dtype(), vm::DType::kBF16);
  EXPECT_THAT(Values<uint16_t>(tbf), ElementsAre(0x3F80));

  TensorProto i64 = Proto(TensorProto::INT64, {2});
  for (int64_t v : {int64_t{-1} << 40, int64_t{3}}) i64.add_int64_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor ti64, TensorFromProto(i64, ""));
  EXPECT_THAT(Values<int64_t>(ti64), ElementsAre(int64_t{-1} << 40, 3));

  TensorProto u32 = Proto(TensorProto::UINT32, {1});
  u32.add_uint64_data(4000000000u);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tu32, TensorFromProto(u32, ""));
  EXPECT_THAT(Values<uint32_t>(tu32), ElementsAre(4000000000u));

  TensorProto u64 = Proto(TensorProto::UINT64, {1});
  u64.add_uint64_data(18000000000000000000u);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tu64, TensorFromProto(u64, ""));
  EXPECT_THAT(Values<uint64_t>(tu64), ElementsAre(18000000000000000000u));

  TensorProto d = Proto(TensorProto::DOUBLE, {2});
  for (double v : {0.1, -1e300}) d.add_double_data(v);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor td, TensorFromProto(d, ""));
  EXPECT_THAT(Values<double>(td), ElementsAre(0.1, -1e300));

  TensorProto s = Proto(TensorProto::STRING, {2});
  s.add_string_data("hello");
  s.add_string_data(std::string("a\0b", 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor ts, TensorFromProto(s, ""));
  EXPECT_THAT(Values<std::string>(ts), ElementsAre("hello", std::string("a\0b", 3)));
}

TEST(TensorFromProtoTest, ScalarsAndEmptyTensors) {
  TensorProto scalar = Proto(TensorProto::INT64, {});
  scalar.add_int64_data(42);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t, TensorFromProto(scalar, ""));
  EXPECT_EQ(t.rank(), 0);
  EXPECT_THAT(Values<int64_t>(t), ElementsAre(42));

  // Zero elements: no data at all is right, whatever the other dims.
  TensorProto empty = Proto(TensorProto::FLOAT, {0, int64_t{1} << 60});
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor e, TensorFromProto(empty, ""));
  EXPECT_EQ(e.num_elements(), 0);
  EXPECT_THAT(Dims(e), ElementsAre(0, int64_t{1} << 60));
}

TEST(TensorFromProtoTest, ReadsRawDataLittleEndian) {
  TensorProto p = Proto(TensorProto::INT32, {2});
  p.set_raw_data(std::string("\x01\x00\x00\x00\xfe\xff\xff\xff", 8));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t, TensorFromProto(p, ""));
  EXPECT_THAT(Values<int32_t>(t), ElementsAre(1, -2));

  // raw_data wins over typed fields, as in ONNX.
  TensorProto f = Proto(TensorProto::FLOAT, {1});
  const float v = 3.25f;
  f.set_raw_data(std::string(reinterpret_cast<const char*>(&v), 4));
  f.add_float_data(9.0f);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tf, TensorFromProto(f, ""));
  EXPECT_THAT(Values<float>(tf), ElementsAre(3.25f));

  // Bool bytes other than 0/1 are normalised.
  TensorProto b = Proto(TensorProto::BOOL, {3});
  b.set_raw_data(std::string("\x00\x02\x01", 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor tb, TensorFromProto(b, ""));
  EXPECT_THAT(Values<uint8_t>(tb), ElementsAre(0, 1, 1));
}

TEST(TensorFromProtoTest, RejectsInconsistentSizes) {
  TensorProto raw = Proto(TensorProto::FLOAT, {2, 3});
  raw.set_raw_data(std::string(20, '\0'));
  EXPECT_THAT(TensorFromProto(raw, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'w' (f32[2, 3]) has 20 bytes of raw_data, expected 24")));

  TensorProto typed = Proto(TensorProto::INT64, {3});
  typed.add_int64_data(1);
  EXPECT_THAT(TensorFromProto(typed, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'w' (i64[3]) has 1 values in int64_data, expected 3")));

  // Data in the wrong field for the type is missing data.
  TensorProto wrong = Proto(TensorProto::FLOAT, {1});
  wrong.add_int32_data(1);
  EXPECT_THAT(TensorFromProto(wrong, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("float_data")));

  // A huge claimed shape with little data fails before allocating anything.
  TensorProto huge = Proto(TensorProto::FLOAT, {int64_t{1} << 40, 4});
  huge.set_raw_data(std::string(16, '\0'));
  EXPECT_THAT(TensorFromProto(huge, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bytes of raw_data")));
  TensorProto huge_typed = Proto(TensorProto::DOUBLE, {int64_t{1} << 50});
  EXPECT_THAT(TensorFromProto(huge_typed, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("double_data")));

  TensorProto overflow = Proto(TensorProto::FLOAT, {int64_t{1} << 40, int64_t{1} << 40});
  EXPECT_THAT(TensorFromProto(overflow, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tensor 'w': shape [1099511627776, 1099511627776] has more "
                                 "than 2^63 elements")));
  // Element count fits in int64 but the byte count does not.
  TensorProto bytes_overflow = Proto(TensorProto::DOUBLE, {int64_t{1} << 62});
  bytes_overflow.set_raw_data("x");
  EXPECT_THAT(TensorFromProto(bytes_overflow, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too large")));

  TensorProto negative = Proto(TensorProto::FLOAT, {2, -1});
  EXPECT_THAT(
      TensorFromProto(negative, ""),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tensor 'w': negative dimension -1")));

  TensorProto string_raw = Proto(TensorProto::STRING, {1});
  string_raw.set_raw_data("abc");
  EXPECT_THAT(TensorFromProto(string_raw, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("raw_data")));
}

TEST(TensorFromProtoTest, RejectsUnsupportedDTypesNamingThem) {
  TensorProto c = Proto(TensorProto::COMPLEX128, {1});
  EXPECT_THAT(TensorFromProto(c, ""),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("COMPLEX128")));
  TensorProto seg = Proto(TensorProto::FLOAT, {1});
  seg.mutable_segment()->set_begin(0);
  EXPECT_THAT(TensorFromProto(seg, ""),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("segmented")));
}

TensorProto External(const std::string& location, const std::string& offset = "",
                     const std::string& length = "") {
  TensorProto p = Proto(TensorProto::FLOAT, {3});
  p.set_data_location(TensorProto::EXTERNAL);
  auto add = [&](const char* key, const std::string& value) {
    auto* e = p.add_external_data();
    e->set_key(key);
    e->set_value(value);
  };
  add("location", location);
  if (!offset.empty()) add("offset", offset);
  if (!length.empty()) add("length", length);
  return p;
}

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

TEST(TensorFromProtoTest, ReadsExternalDataInsideTheModelDirectory) {
  TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const fs::path model_dir = tmp.path() / "model";
  fs::create_directories(model_dir / "sub");
  WriteFile(model_dir / "weights.bin", std::string(8, 'x') + FloatBytes({1.0f, 2.0f, 3.0f}));
  WriteFile(model_dir / "exact.bin", FloatBytes({4.0f, 5.0f, 6.0f}));

  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t,
                              TensorFromProto(External("weights.bin", "8", "12"), model_dir));
  EXPECT_THAT(Values<float>(t), ElementsAre(1.0f, 2.0f, 3.0f));
  // No length: to the end of the file.
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t2,
                              TensorFromProto(External("weights.bin", "8"), model_dir));
  EXPECT_THAT(Values<float>(t2), ElementsAre(1.0f, 2.0f, 3.0f));
  // '..' that stays inside is fine.
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t3,
                              TensorFromProto(External("sub/../exact.bin"), model_dir));
  EXPECT_THAT(Values<float>(t3), ElementsAre(4.0f, 5.0f, 6.0f));

  EXPECT_THAT(
      TensorFromProto(External("weights.bin"), model_dir),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("tensor 'w' (f32[3]) has 20 bytes of external data, expected 12")));
  EXPECT_THAT(TensorFromProto(External("weights.bin", "21"), model_dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("offset 21 is past the end of 'weights.bin' (20 bytes)")));
  EXPECT_THAT(TensorFromProto(External("weights.bin", "12", "12"), model_dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is outside 'weights.bin'")));
  EXPECT_THAT(TensorFromProto(External("weights.bin", "-4"), model_dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("offset '-4'")));
  EXPECT_THAT(TensorFromProto(External("weights.bin", "", "1e3"), model_dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("length '1e3'")));
  EXPECT_THAT(TensorFromProto(External("missing.bin"), model_dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'missing.bin'")));
  EXPECT_THAT(TensorFromProto(External("sub"), model_dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("not a file")));
  EXPECT_THAT(TensorFromProto(External("weights.bin"), ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("directory is not known")));
  TensorProto no_location = External("weights.bin");
  no_location.mutable_external_data(0)->set_key("path");
  EXPECT_THAT(TensorFromProto(no_location, model_dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no 'location'")));
}

TEST(TensorFromProtoTest, UnpacksExternalSubByteData) {
  TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  WriteFile(tmp.path() / "q.bin", std::string("\x7f\x08\x03", 3));
  TensorProto p = External("q.bin");
  p.set_data_type(TensorProto::INT4);
  p.set_dims(0, 5);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t, TensorFromProto(p, tmp.path()));
  EXPECT_THAT(Values<int8_t>(t), ElementsAre(-1, 7, -8, 0, 3));
  p.set_dims(0, 7);  // needs 4 bytes
  EXPECT_THAT(TensorFromProto(p, tmp.path()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("(i4[7]) has 3 bytes of external data, expected 4")));
}

TEST(TensorFromProtoTest, RejectsExternalDataOutsideTheModelDirectory) {
  TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const fs::path model_dir = tmp.path() / "model";
  fs::create_directories(model_dir);
  fs::create_directories(tmp.path() / "model2");
  // Real files, so only the path check can reject them.
  WriteFile(tmp.path() / "x", FloatBytes({1, 2, 3}));
  WriteFile(tmp.path() / "model2" / "w.bin", FloatBytes({1, 2, 3}));
  fs::create_symlink(tmp.path() / "x", model_dir / "link.bin");

  for (const std::string& location :
       {std::string("../x"), std::string("../model2/w.bin"), std::string("link.bin"),
        (tmp.path() / "x").string(), std::string("a/../../x")}) {
    EXPECT_THAT(
        TensorFromProto(External(location), model_dir),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 HasSubstr("external data path '" + location + "' escapes the model directory")))
        << location;
  }
}

TEST(TensorToProtoTest, RoundTrips) {
  const std::vector<float> f = {1.0f, -2.5f, 3.0f, 0.0f, 1e-30f, 7.0f};
  vm::Tensor tf = vm::Tensor::FromVector<float>(f, {2, 3});
  TensorProto p;
  p.set_name("keep");
  ASSERT_THAT(TensorToProto(tf, &p), IsOk());
  EXPECT_EQ(p.name(), "keep");
  EXPECT_EQ(p.data_type(), TensorProto::FLOAT);
  EXPECT_THAT(p.dims(), ElementsAre(2, 3));
  EXPECT_EQ(p.raw_data().size(), 24u);
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor back, TensorFromProto(p, ""));
  EXPECT_THAT(Dims(back), ElementsAre(2, 3));
  EXPECT_EQ(Values<float>(back), f);

  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor ts, vm::Tensor::Empty(vm::DType::kString, {2}));
  ts.data<std::string>()[0] = "x";
  ts.data<std::string>()[1] = "yz";
  TensorProto ps;
  ASSERT_THAT(TensorToProto(ts, &ps), IsOk());
  EXPECT_THAT(ps.string_data(), ElementsAre("x", "yz"));
  EXPECT_FALSE(ps.has_raw_data());

  const bool bools[] = {true, false, true};
  vm::Tensor tb = vm::Tensor::FromVector<bool>(absl::MakeConstSpan(bools), {3});
  TensorProto pb;
  ASSERT_THAT(TensorToProto(tb, &pb), IsOk());
  EXPECT_EQ(pb.data_type(), TensorProto::BOOL);
  EXPECT_EQ(pb.raw_data(), std::string("\x01\x00\x01", 3));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor bb, TensorFromProto(pb, ""));
  EXPECT_THAT(Values<bool>(bb), ElementsAre(true, false, true));

  EXPECT_THAT(TensorToProto(vm::Tensor(), &p),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null tensor")));
}

TEST(ReadTensorProtoFileTest, ReadsWrittenFile) {
  TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  TensorProto p;
  ASSERT_THAT(TensorToProto(vm::Tensor::FromVector<int64_t>(std::vector<int64_t>{4, 5}, {2}), &p),
              IsOk());
  WriteFile(tmp.path() / "t.pb", p.SerializeAsString());
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor t, ReadTensorProtoFile((tmp.path() / "t.pb").string()));
  EXPECT_THAT(Values<int64_t>(t), ElementsAre(4, 5));

  WriteFile(tmp.path() / "bad.pb", "\xff\xff\xff");
  EXPECT_THAT(ReadTensorProtoFile((tmp.path() / "bad.pb").string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("failed to parse protobuf")));
  EXPECT_THAT(ReadTensorProtoFile((tmp.path() / "none.pb").string()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("cannot open")));
  EXPECT_THAT(ReadTensorProtoFile(tmp.path().string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
  EXPECT_THAT(ReadTensorProtoFile("/dev/zero"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
  EXPECT_THAT(ReadFileToString((tmp.path() / "t.pb").string(), 3),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("larger than the limit")));
}

TEST(ConformanceDataTest, ReadsTensorInputsAndOutputs) {
  const std::string dir = std::string(kSuite) + "/test_add/test_data_set_0/";
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor x, ReadTensorProtoFile(dir + "input_0.pb"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor y, ReadTensorProtoFile(dir + "input_1.pb"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(vm::Tensor sum, ReadTensorProtoFile(dir + "output_0.pb"));
  EXPECT_EQ(x.TypeString(), "f32[3, 4, 5]");
  EXPECT_EQ(sum.TypeString(), "f32[3, 4, 5]");
  // The first element of x is 0x3FE1CC78 = 1.7640524 (numpy seed 0's first normal sample).
  EXPECT_NEAR(x.data<float>()[0], 1.7640524f, 1e-6f);
  // The expected output really is x + y, element by element.
  for (int64_t i = 0; i < sum.num_elements(); ++i) {
    ASSERT_NEAR(sum.data<float>()[i], x.data<float>()[i] + y.data<float>()[i], 1e-6f) << i;
  }
}

TEST(ConformanceDataTest, ReadsSequenceAndOptionalInputs) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(
      std::vector<vm::Tensor> seq,
      ReadSequenceProtoFile(std::string(kSuite) +
                            "/test_sequence_insert_at_back/test_data_set_0/input_0.pb"));
  ASSERT_EQ(seq.size(), 3u);
  EXPECT_EQ(seq[0].TypeString(), "i64[4]");
  EXPECT_EQ(seq[1].TypeString(), "i64[3]");
  EXPECT_EQ(seq[2].TypeString(), "i64[2]");
  EXPECT_THAT(Values<int64_t>(seq[0]), ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(Values<int64_t>(seq[2]), ElementsAre(8, 9));

  NIMBLE_ASSERT_OK_AND_ASSIGN(
      OptionalData tensor,
      ReadOptionalProtoFile(std::string(kSuite) +
                            "/test_optional_has_element_optional_input/test_data_set_0/"
                            "input_0.pb"));
  ASSERT_EQ(tensor.kind, OptionalData::Kind::kTensor);
  EXPECT_THAT(Values<float>(tensor.tensor), ElementsAre(1.0f, 2.0f, 3.0f, 4.0f));

  NIMBLE_ASSERT_OK_AND_ASSIGN(
      OptionalData sequence,
      ReadOptionalProtoFile(std::string(kSuite) +
                            "/test_optional_get_element_optional_sequence/test_data_set_0/"
                            "input_0.pb"));
  ASSERT_EQ(sequence.kind, OptionalData::Kind::kSequence);
  ASSERT_EQ(sequence.sequence.size(), 1u);
  EXPECT_THAT(Values<int32_t>(sequence.sequence[0]), ElementsAre(1, 2, 3, 4));

  NIMBLE_ASSERT_OK_AND_ASSIGN(
      OptionalData none,
      ReadOptionalProtoFile(std::string(kSuite) +
                            "/test_optional_has_element_empty_optional_input/test_data_set_0/"
                            "input_0.pb"));
  EXPECT_EQ(none.kind, OptionalData::Kind::kNone);
}

TEST(SequenceFromProtoTest, RejectsNonTensorElements) {
  nimble::onnx::SequenceProto seq;
  seq.set_name("s");
  seq.set_elem_type(nimble::onnx::SequenceProto::MAP);
  seq.add_map_values();
  EXPECT_THAT(SequenceFromProto(seq, ""),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("sequence 's'")));

  nimble::onnx::SequenceProto bad;
  bad.set_name("s");
  bad.set_elem_type(nimble::onnx::SequenceProto::TENSOR);
  *bad.add_tensor_values() = Proto(TensorProto::FLOAT, {2});
  EXPECT_THAT(SequenceFromProto(bad, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sequence 's' element 0: tensor 'w' (f32[2]) has 0 values")));
}

}  // namespace
}  // namespace nimble::compiler
