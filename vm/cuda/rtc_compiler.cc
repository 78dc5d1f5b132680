#include "vm/cuda/rtc_compiler.h"

#include <nvrtc.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "vm/cuda/cuda_status.h"

namespace nimble::vm::cuda {
namespace {

constexpr char kCacheFormat[] = "nimble-rtc-cubin-v1";

// SHA-256 over length-prefixed fields, so ("ab","c") and ("a","bc") differ.
class KeyHasher {
 public:
  KeyHasher() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~KeyHasher() { EVP_MD_CTX_free(ctx_); }
  KeyHasher(const KeyHasher&) = delete;
  KeyHasher& operator=(const KeyHasher&) = delete;

  void Add(absl::string_view field) {
    const uint64_t size = field.size();
    EVP_DigestUpdate(ctx_, &size, sizeof(size));
    EVP_DigestUpdate(ctx_, field.data(), field.size());
  }
  std::string Hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx_, digest, &length);
    return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
  }

 private:
  EVP_MD_CTX* ctx_;
};

bool LooksLikeCubin(const std::string& bytes) {
  return bytes.size() > 4 && std::memcmp(bytes.data(),
                                         "\x7f"
                                         "ELF",
                                         4) == 0;
}

// Empty when the file is missing or unreadable: the caller then compiles.
std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream contents;
  contents << in.rdbuf();
  return in.bad() ? "" : contents.str();
}

absl::Status WriteAtomically(const std::filesystem::path& path, const std::string& bytes) {
  static std::atomic<uint64_t> counter{0};
  std::filesystem::path temp = path;
  temp += absl::StrCat(".tmp.", getpid(), ".", counter.fetch_add(1));
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(temp, ignored);
      return absl::InternalError(absl::StrCat("writing RTC cache entry ", temp.string()));
    }
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    return absl::InternalError(
        absl::StrCat("renaming RTC cache entry to ", path.string(), ": ", error.message()));
  }
  return absl::OkStatus();
}

// Owner of an nvrtcProgram.
struct Program {
  nvrtcProgram program = nullptr;
  ~Program() {
    if (program != nullptr) nvrtcDestroyProgram(&program);
  }
};

}  // namespace

RtcModule::~RtcModule() { cudaLibraryUnload(library_); }

absl::StatusOr<cudaKernel_t> RtcModule::GetKernel(const std::string& name) const {
  cudaKernel_t kernel = nullptr;
  NIMBLE_RETURN_IF_ERROR(Annotate(
      CudaStatus(cudaLibraryGetKernel(&kernel, library_, name.c_str()), "cudaLibraryGetKernel"),
      absl::StrCat("kernel '", name, "' (declare it extern \"C\")")));
  return kernel;
}

absl::Status RtcModule::Launch(cudaKernel_t kernel, dim3 grid, dim3 block, void** args,
                               size_t shared_bytes, cudaStream_t stream) const {
  return CudaStatus(cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, args,
                                     shared_bytes, stream),
                    "cudaLaunchKernel");
}

absl::StatusOr<std::unique_ptr<RtcCompiler>> RtcCompiler::Create(
    const RtcCompilerOptions& options) {
  int arch_number = options.arch;
  if (arch_number == 0) {
    cudaDeviceProp prop;
    NIMBLE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options.device));
    arch_number = prop.major * 10 + prop.minor;
  }
  int count = 0;
  NIMBLE_NVRTC_RETURN_IF_ERROR(nvrtcGetNumSupportedArchs(&count));
  std::vector<int> archs(static_cast<size_t>(count));
  NIMBLE_NVRTC_RETURN_IF_ERROR(nvrtcGetSupportedArchs(archs.data()));
  if (std::find(archs.begin(), archs.end(), arch_number) == archs.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("NVRTC cannot generate code for sm_", arch_number,
                     "; it supports: ", absl::StrJoin(archs, ", ")));
  }
  int major = 0, minor = 0;
  NIMBLE_NVRTC_RETURN_IF_ERROR(nvrtcVersion(&major, &minor));
  if (!options.cache_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(options.cache_dir, error);
    if (error) {
      return absl::FailedPreconditionError(
          absl::StrCat("creating RTC cache directory ", options.cache_dir, ": ", error.message()));
    }
  }
  return std::unique_ptr<RtcCompiler>(
      new RtcCompiler(options, absl::StrCat("sm_", arch_number), major, minor));
}

std::string RtcCompiler::CacheKey(const std::string& source,
                                  const std::vector<std::string>& options) const {
  KeyHasher hasher;
  hasher.Add(kCacheFormat);
  hasher.Add(source);
  hasher.Add(absl::StrCat(options.size()));
  for (const std::string& option : options) hasher.Add(option);
  hasher.Add(arch_);
  hasher.Add(absl::StrCat("nvrtc ", nvrtc_major_, ".", nvrtc_minor_));
  return hasher.Hex();
}

absl::StatusOr<std::string> RtcCompiler::Compile(const std::string& source, const std::string& name,
                                                 const std::vector<std::string>& options) {
  ++compilations_;
  Program program;
  NIMBLE_NVRTC_RETURN_IF_ERROR(
      nvrtcCreateProgram(&program.program, source.c_str(), name.c_str(), 0, nullptr, nullptr));
  std::vector<std::string> all = {absl::StrCat("--gpu-architecture=", arch_), "--std=c++17"};
  all.insert(all.end(), options.begin(), options.end());
  std::vector<const char*> argv;
  for (const std::string& option : all) argv.push_back(option.c_str());
  const nvrtcResult result =
      nvrtcCompileProgram(program.program, static_cast<int>(argv.size()), argv.data());
  if (result == NVRTC_ERROR_COMPILATION) {
    size_t log_size = 0;
    std::string log;
    if (nvrtcGetProgramLogSize(program.program, &log_size) == NVRTC_SUCCESS && log_size > 1) {
      log.resize(log_size);
      nvrtcGetProgramLog(program.program, log.data());
      log.resize(log_size - 1);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("NVRTC compilation of '", name, "' for ", arch_, " failed:\n", log));
  }
  NIMBLE_RETURN_IF_ERROR(NvrtcStatus(result, "nvrtcCompileProgram"));
  size_t size = 0;
  NIMBLE_NVRTC_RETURN_IF_ERROR(nvrtcGetCUBINSize(program.program, &size));
  std::string cubin(size, '\0');
  NIMBLE_NVRTC_RETURN_IF_ERROR(nvrtcGetCUBIN(program.program, cubin.data()));
  return cubin;
}

absl::StatusOr<std::string> RtcCompiler::CompileToCubin(const std::string& source,
                                                        const std::string& name,
                                                        const std::vector<std::string>& options) {
  if (options_.cache_dir.empty()) return Compile(source, name, options);
  const std::filesystem::path path =
      std::filesystem::path(options_.cache_dir) / (CacheKey(source, options) + ".cubin");
  std::string cached = ReadFile(path);
  if (LooksLikeCubin(cached)) {
    ++disk_hits_;
    return cached;
  }
  NIMBLE_ASSIGN_OR_RETURN(std::string cubin, Compile(source, name, options));
  // A cache that cannot be written costs a recompilation next time, not this call's result.
  if (WriteAtomically(path, cubin).ok()) ++disk_writes_;
  return cubin;
}

absl::StatusOr<std::unique_ptr<RtcModule>> RtcCompiler::Load(
    const std::string& source, const std::string& name, const std::vector<std::string>& options) {
  NIMBLE_ASSIGN_OR_RETURN(std::string cubin, CompileToCubin(source, name, options));
  cudaLibrary_t library = nullptr;
  NIMBLE_RETURN_IF_ERROR(Annotate(CudaStatus(cudaLibraryLoadData(&library, cubin.data(), nullptr,
                                                                 nullptr, 0, nullptr, nullptr, 0),
                                             "cudaLibraryLoadData"),
                                  absl::StrCat("loading '", name, "'")));
  return std::unique_ptr<RtcModule>(new RtcModule(library));
}

RtcStats RtcCompiler::Stats() const {
  return RtcStats{.compilations = compilations_.load(),
                  .disk_hits = disk_hits_.load(),
                  .disk_writes = disk_writes_.load()};
}

}  // namespace nimble::vm::cuda
