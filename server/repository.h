// The model repository on disk:
//
//   <root>/<model>/config.json          optional (server/model_config.h)
//   <root>/<model>/<version>/model.onnx  version = a positive integer; other files beside
//                                        model.onnx (external weights) belong to the version
//
// Uploads replace a model directory atomically: the files go to a hidden temp directory, every
// file and directory is fsync'ed, and one rename (an exchange when the model exists) puts it in
// place, so a crash mid-upload leaves either the old model or the new one, never half of one.
// Hidden entries (".upload-*", ".old-*") are not models and are cleaned up at start.
//
// Thread-safe: no in-memory state besides the root; concurrent writers of the same model are
// serialised by the caller (ModelManager).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace nimble::server {

// Model names are one path component of [A-Za-z0-9_.-], not starting with '.'.
absl::Status ValidateModelName(absl::string_view name);

// A `file:<version>/<path>` upload key's path part: relative, no "." or ".." components, no
// backslashes or NULs; the version part is a positive integer.
struct UploadPath {
  int64_t version = 0;
  std::string path;  // inside the version directory, e.g. "model.onnx"
};
absl::StatusOr<UploadPath> ParseUploadKey(absl::string_view key);

// kInvalidArgument unless `bytes` parse as an ONNX ModelProto with a graph.
absl::Status CheckOnnxModel(absl::string_view bytes);

class ModelRepository {
 public:
  explicit ModelRepository(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }

  // Removes what interrupted uploads left behind.
  void CleanUp() const;

  // Model directory names, sorted.
  absl::StatusOr<std::vector<std::string>> ListModels() const;
  bool HasModel(const std::string& model) const;

  // Versions with a model.onnx, ascending; kNotFound when the model has none.
  absl::StatusOr<std::vector<int64_t>> ListVersions(const std::string& model) const;

  // The config.json text, or "" when there is none.
  absl::StatusOr<std::string> ReadConfig(const std::string& model) const;

  std::string VersionDir(const std::string& model, int64_t version) const;
  std::string ModelPath(const std::string& model, int64_t version) const;

  // Every file of a version (relative path -> full path), for the cache digest.
  absl::StatusOr<std::map<std::string, std::string>> ListVersionFiles(const std::string& model,
                                                                      int64_t version) const;

  // Replaces the model with `files` (upload key path -> bytes) and `config_json` (written as
  // config.json when present) atomically. Every version must have a model.onnx that parses.
  absl::Status WriteModel(const std::string& model, const std::optional<std::string>& config_json,
                          const std::map<std::string, std::string>& files) const;

  // Replaces only config.json (atomically: temp file, fsync, rename).
  absl::Status WriteConfig(const std::string& model, const std::string& config_json) const;

 private:
  std::string root_;
};

// Writes `bytes` to `path` atomically: `path`.tmp-*, fsync, rename, fsync of the directory.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes);

// Reads a whole file.
absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace nimble::server
