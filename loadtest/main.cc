// nimble-load: perf_analyzer-style load generator for KServe v2 gRPC servers. See README.md.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loadtest/load_engine.h"
#include "loadtest/options.h"
#include "loadtest/report.h"

namespace {

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

int Fail(const absl::Status& status, int code) {
  std::cerr << "nimble-load: " << status.message() << std::endl;
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h") {
      std::cout << nimble::load::UsageText();
      return 0;
    }
  }
  auto options = nimble::load::ParseCommandLine(args);
  if (!options.ok()) return Fail(options.status(), 2);
  auto engine = nimble::load::LoadEngine::Create(*options, options->quiet ? nullptr : &std::cerr);
  if (!engine.ok()) return Fail(engine.status(), 1);
  auto report = (*engine)->Run();
  if (!report.ok()) return Fail(report.status(), 1);
  std::cout << nimble::load::TableReport(*report);
  if (!options->csv_file.empty()) {
    if (auto s = WriteFile(options->csv_file, nimble::load::CsvReport(*report)); !s.ok()) {
      return Fail(s, 1);
    }
  }
  if (!options->json_file.empty()) {
    if (auto s = WriteFile(options->json_file, nimble::load::JsonReport(*report)); !s.ok()) {
      return Fail(s, 1);
    }
  }
  // Every level failed every request: the run measured nothing.
  for (const auto& level : report->levels) {
    if (level.completed > 0) return 0;
  }
  std::cerr << "nimble-load: no request succeeded" << std::endl;
  return 3;
}
