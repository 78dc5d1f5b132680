#include "server/repository.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "compiler/frontend/onnx/onnx.pb.h"
#include "spdlog/spdlog.h"

namespace nimble::server {
namespace fs = std::filesystem;
namespace {

constexpr char kModelFile[] = "model.onnx";
constexpr char kConfigFile[] = "config.json";

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " '", path, "': ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("cannot fsync", path);
  return absl::OkStatus();
}

absl::Status WriteAndSync(const std::string& path, absl::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", path);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return Errno("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return Errno("cannot fsync", path);
  }
  if (::close(fd) != 0) return Errno("cannot close", path);
  return absl::OkStatus();
}

std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(::getpid(), "-", counter.fetch_add(1));
}

bool IsVersionName(absl::string_view name, int64_t* version) {
  if (name.empty() || !std::all_of(name.begin(), name.end(), absl::ascii_isdigit)) return false;
  return absl::SimpleAtoi(name, version) && *version > 0;
}

}  // namespace

absl::Status ValidateModelName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("model name is empty");
  if (name.size() > 200) return absl::InvalidArgumentError("model name is over 200 characters");
  const bool ok = std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
  });
  if (!ok || name[0] == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid model name '", absl::CHexEscape(name),
                     "': use letters, digits, '_', '-' and '.', not starting with '.'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<UploadPath> ParseUploadKey(absl::string_view key) {
  if (!absl::ConsumePrefix(&key, "file:")) {
    return absl::InvalidArgumentError(absl::StrCat("'", key, "' is not a file: parameter"));
  }
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("upload file name 'file:", absl::CHexEscape(key),
                                                   "' ", why,
                                                   " (expected file:<version>/<name>, e.g. "
                                                   "file:1/model.onnx)"));
  };
  if (key.find('\0') != absl::string_view::npos || key.find('\\') != absl::string_view::npos) {
    return bad("contains a NUL or backslash");
  }
  std::vector<absl::string_view> parts = absl::StrSplit(key, '/');
  if (parts.size() < 2) return bad("has no version directory");
  UploadPath out;
  if (!IsVersionName(parts[0], &out.version)) return bad("does not start with a version number");
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i].empty() || parts[i] == "." || parts[i] == "..") {
      return bad("escapes its version directory or has an empty component");
    }
    if (parts[i][0] == '.') return bad("names a hidden file");
  }
  out.path = std::string(key.substr(parts[0].size() + 1));
  return out;
}

absl::Status CheckOnnxModel(absl::string_view bytes) {
  nimble::onnx::ModelProto model;
  if (!model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || !model.has_graph() ||
      model.ir_version() <= 0) {
    return absl::InvalidArgumentError("is not an ONNX model (no ModelProto with a graph)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading '", path, "'"));
  return std::move(out).str();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes) {
  const std::string tmp = absl::StrCat(path, ".tmp-", UniqueSuffix());
  absl::Status status = WriteAndSync(tmp, bytes);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) status = Errno("cannot rename", tmp);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  return FsyncPath(fs::path(path).parent_path().string(), /*directory=*/true);
}

void ModelRepository::CleanUp() const {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, ".upload-") || absl::StartsWith(name, ".old-")) {
      spdlog::warn("repository: removing '{}' left by an interrupted upload", name);
      fs::remove_all(entry.path(), ec);
    }
  }
}

absl::StatusOr<std::vector<std::string>> ModelRepository::ListModels() const {
  std::error_code ec;
  std::vector<std::string> models;
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory(ec) || !ValidateModelName(name).ok()) continue;
    models.push_back(name);
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list repository '", root_, "': ", ec.message()));
  }
  std::sort(models.begin(), models.end());
  return models;
}

bool ModelRepository::HasModel(const std::string& model) const {
  std::error_code ec;
  return fs::is_directory(fs::path(root_) / model, ec);
}

absl::StatusOr<std::vector<int64_t>> ModelRepository::ListVersions(const std::string& model) const {
  std::error_code ec;
  std::vector<int64_t> versions;
  for (const auto& entry : fs::directory_iterator(fs::path(root_) / model, ec)) {
    int64_t version = 0;
    if (!IsVersionName(entry.path().filename().string(), &version)) continue;
    if (fs::is_regular_file(entry.path() / kModelFile, ec)) versions.push_back(version);
  }
  if (versions.empty()) {
    return absl::NotFoundError(
        absl::StrCat("model '", model, "' has no <version>/", kModelFile, " in the repository"));
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

absl::StatusOr<std::string> ModelRepository::ReadConfig(const std::string& model) const {
  const fs::path path = fs::path(root_) / model / kConfigFile;
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::string();
  return ReadFile(path.string());
}

std::string ModelRepository::VersionDir(const std::string& model, int64_t version) const {
  return (fs::path(root_) / model / std::to_string(version)).string();
}

std::string ModelRepository::ModelPath(const std::string& model, int64_t version) const {
  return (fs::path(VersionDir(model, version)) / kModelFile).string();
}

absl::StatusOr<std::map<std::string, std::string>> ModelRepository::ListVersionFiles(
    const std::string& model, int64_t version) const {
  std::map<std::string, std::string> files;
  const fs::path dir = VersionDir(model, version);
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    files[fs::relative(it->path(), dir, ec).string()] = it->path().string();
  }
  if (ec)
    return absl::InternalError(absl::StrCat("cannot read '", dir.string(), "': ", ec.message()));
  return files;
}

absl::Status ModelRepository::WriteModel(const std::string& model,
                                         const std::optional<std::string>& config_json,
                                         const std::map<std::string, std::string>& files) const {
  NIMBLE_RETURN_IF_ERROR(ValidateModelName(model));
  // Check everything before writing anything.
  std::map<int64_t, bool> has_model_file;
  for (const auto& [key, bytes] : files) {
    NIMBLE_ASSIGN_OR_RETURN(UploadPath upload, ParseUploadKey(key));
    if (upload.path == kModelFile) {
      absl::Status onnx = CheckOnnxModel(bytes);
      if (!onnx.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("upload '", key, "' ", onnx.message()));
      }
      has_model_file[upload.version] = true;
    } else {
      has_model_file.try_emplace(upload.version, false);
    }
  }
  if (has_model_file.empty()) return absl::InvalidArgumentError("the upload has no files");
  for (const auto& [version, present] : has_model_file) {
    if (!present) {
      return absl::InvalidArgumentError(
          absl::StrCat("upload of version ", version, " has no file:", version, "/", kModelFile));
    }
  }

  const fs::path root(root_);
  const fs::path staging = root / absl::StrCat(".upload-", model, "-", UniqueSuffix());
  std::error_code ec;
  auto fail = [&](absl::Status status) {
    fs::remove_all(staging, ec);
    return status;
  };
  if (!fs::create_directory(staging, ec)) {
    return absl::InternalError(
        absl::StrCat("cannot create '", staging.string(), "': ", ec.message()));
  }
  std::vector<fs::path> dirs = {staging};
  for (const auto& [key, bytes] : files) {
    const UploadPath upload = *ParseUploadKey(key);
    const fs::path path = staging / std::to_string(upload.version) / upload.path;
    for (fs::path d = path.parent_path(); d != staging; d = d.parent_path()) {
      if (std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.push_back(d);
    }
    fs::create_directories(path.parent_path(), ec);
    if (ec)
      return fail(absl::InternalError(absl::StrCat("cannot create directory: ", ec.message())));
    absl::Status written = WriteAndSync(path.string(), bytes);
    if (!written.ok()) return fail(written);
  }
  if (config_json.has_value()) {
    absl::Status written = WriteAndSync((staging / kConfigFile).string(), *config_json);
    if (!written.ok()) return fail(written);
  }
  for (const fs::path& d : dirs) {
    absl::Status synced = FsyncPath(d.string(), /*directory=*/true);
    if (!synced.ok()) return fail(synced);
  }

  const fs::path target = root / model;
  if (fs::exists(target, ec)) {
    // One atomic exchange: readers see the old directory or the new one.
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
      return fail(Errno("cannot exchange into", target.string()));
    }
    fs::remove_all(staging, ec);  // now the old model
  } else if (::rename(staging.c_str(), target.c_str()) != 0) {
    return fail(Errno("cannot rename into", target.string()));
  }
  return FsyncPath(root_, /*directory=*/true);
}

absl::Status ModelRepository::WriteConfig(const std::string& model,
                                          const std::string& config_json) const {
  NIMBLE_RETURN_IF_ERROR(ValidateModelName(model));
  if (!HasModel(model)) {
    return absl::NotFoundError(absl::StrCat("model '", model, "' is not in the repository"));
  }
  return WriteFileAtomically((fs::path(root_) / model / kConfigFile).string(), config_json);
}

}  // namespace nimble::server
