#include "server/repository.h"

#include <filesystem>

#include "base/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/test_models.h"

namespace nimble::server {
namespace {

using ::nimble::testing::IsOk;
using ::nimble::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/nimble_repository_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
  }
  std::string root_;
};

TEST(UploadKeyTest, AcceptsVersionPathsAndRejectsEscapes) {
  NIMBLE_ASSERT_OK_AND_ASSIGN(UploadPath p, ParseUploadKey("file:3/model.onnx"));
  EXPECT_EQ(p.version, 3);
  EXPECT_EQ(p.path, "model.onnx");
  NIMBLE_ASSERT_OK_AND_ASSIGN(p, ParseUploadKey("file:1/weights/w.bin"));
  EXPECT_EQ(p.path, "weights/w.bin");
  for (const char* bad :
       {"file:1/../x", "file:../1/model.onnx", "file:/etc/passwd", "file:1//x", "file:0/model.onnx",
        "file:a/model.onnx", "file:1", "file:1/./model.onnx", "file:1/.hidden", "file:1/a\\b"}) {
    EXPECT_THAT(ParseUploadKey(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("upload file name")))
        << bad;
  }
}

TEST(ModelNameTest, OneSafePathComponent) {
  EXPECT_THAT(ValidateModelName("bert-base_v1.2"), IsOk());
  for (const char* bad : {"", "..", ".hidden", "a/b", "a b", "../x"}) {
    EXPECT_THAT(ValidateModelName(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST_F(RepositoryTest, WritesListsAndReplacesModelsAtomically) {
  ModelRepository repo(root_);
  const std::string onnx = testing::ElementwiseModel("Add");
  ASSERT_THAT(repo.WriteModel("m", std::string(R"({"max_batch_size": 2})"),
                              {{"file:1/model.onnx", onnx}, {"file:2/model.onnx", onnx}}),
              IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto models, repo.ListModels());
  EXPECT_THAT(models, ElementsAre("m"));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto versions, repo.ListVersions("m"));
  EXPECT_THAT(versions, ElementsAre(1, 2));
  NIMBLE_ASSERT_OK_AND_ASSIGN(std::string config, repo.ReadConfig("m"));
  EXPECT_EQ(config, R"({"max_batch_size": 2})");

  // A replacement swaps the whole directory: version 2 and the config are gone.
  ASSERT_THAT(repo.WriteModel("m", std::nullopt, {{"file:5/model.onnx", onnx}}), IsOk());
  NIMBLE_ASSERT_OK_AND_ASSIGN(versions, repo.ListVersions("m"));
  EXPECT_THAT(versions, ElementsAre(5));
  NIMBLE_ASSERT_OK_AND_ASSIGN(config, repo.ReadConfig("m"));
  EXPECT_EQ(config, "");
  // No staging directories are left behind.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(root_)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "m");
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(RepositoryTest, RejectsNonOnnxAndMissingModelFilesWithoutWriting) {
  ModelRepository repo(root_);
  EXPECT_THAT(repo.WriteModel("m", std::nullopt, {{"file:1/model.onnx", "MZ\x90\x00 not onnx"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not an ONNX model")));
  EXPECT_THAT(repo.WriteModel("m", std::nullopt, {{"file:1/weights.bin", "abc"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no file:1/model.onnx")));
  EXPECT_THAT(repo.WriteModel("m", std::nullopt, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no files")));
  EXPECT_TRUE(std::filesystem::is_empty(root_));
}

TEST_F(RepositoryTest, CleanUpRemovesInterruptedUploads) {
  std::filesystem::create_directories(root_ + "/.upload-m-1/1");
  ModelRepository repo(root_);
  repo.CleanUp();
  EXPECT_TRUE(std::filesystem::is_empty(root_));
  NIMBLE_ASSERT_OK_AND_ASSIGN(auto models, repo.ListModels());
  EXPECT_TRUE(models.empty());
}

}  // namespace
}  // namespace nimble::server
