// A CUPTI activity tracer injected into any CUDA process (CUDA_INJECTION64_PATH), for machines
// without Nsight Systems: it records every kernel, memcpy and memset the GPU runs (graph nodes
// included, with their node ids) and, when the process exits, writes them as CSV to
// $NIMBLE_CUPTI_TRACE (default /tmp/cupti_trace.csv) in the columns bench/gpu/graph_timeline.py
// reads:
//
//   CUDA_INJECTION64_PATH=libnimble_cupti_trace.so NIMBLE_CUPTI_TRACE=t.csv
//       nimblec bench m.nbx ... --device-graphs
//   python3 bench/gpu/graph_timeline.py t.csv
#include <cupti.h>
#include <cxxabi.h>

// The activity record versions below (Kernel10, Memcpy6, Memset4) are CUPTI 13.0's and 13.1's.
#if CUPTI_API_VERSION < 130000 || CUPTI_API_VERSION >= 130200
#error "cupti_trace.cc reads CUPTI 13.0-13.1 activity records; update the record types"
#endif

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Row {
  uint64_t start, end;
  uint32_t stream;
  uint64_t node;
  std::string name;
};

std::mutex mu;
std::vector<Row>* rows = new std::vector<Row>();  // leaked: written at exit

std::string Demangle(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = status == 0 && d != nullptr ? d : name;
  std::free(d);
  return s;
}

const char* CopyKind(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD:
      return "Host-to-Device";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH:
      return "Device-to-Host";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD:
      return "Device-to-Device";
    default:
      return "other";
  }
}

void CUPTIAPI BufferRequested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = size_t{16} << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI BufferCompleted(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::vector<Row> got;
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL ||
        record->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      got.push_back({k->start, k->end, k->streamId, k->graphNodeId, Demangle(k->name)});
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      got.push_back({m->start, m->end, m->streamId, m->graphNodeId,
                     std::string("[CUDA memcpy ") + CopyKind(m->copyKind) + "] " +
                         std::to_string(m->bytes) + " B"});
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
      got.push_back({m->start, m->end, m->streamId, m->graphNodeId,
                     "[CUDA memset] " + std::to_string(m->bytes) + " B"});
    }
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(mu);
  rows->insert(rows->end(), got.begin(), got.end());
}

void Write() {
  if (cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED) != CUPTI_SUCCESS) {
    std::fprintf(stderr, "cupti_trace: flushing the activity buffers failed\n");
  }
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped) == CUPTI_SUCCESS && dropped > 0) {
    std::fprintf(stderr, "cupti_trace: %zu records dropped: the trace is incomplete\n", dropped);
  }
  const char* path = std::getenv("NIMBLE_CUPTI_TRACE");
  FILE* f = std::fopen(path != nullptr ? path : "/tmp/cupti_trace.csv", "w");
  if (f == nullptr) return;
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(f, "\"Start (ns)\",\"Duration (ns)\",\"Strm\",\"Node\",\"Name\"\n");
  for (const Row& r : *rows) {
    std::string name = r.name;
    for (char& c : name) c = c == '"' ? '\'' : c;
    std::fprintf(f, "%llu,%llu,%u,%llu,\"%s\"\n", static_cast<unsigned long long>(r.start),
                 static_cast<unsigned long long>(r.end - r.start), r.stream,
                 static_cast<unsigned long long>(r.node), name.c_str());
  }
  std::fclose(f);
}

}  // namespace

// Called by the CUDA driver when it loads this library (CUDA_INJECTION64_PATH).
extern "C" int InitializeInjection() {
  if (cuptiActivityRegisterCallbacks(BufferRequested, BufferCompleted) != CUPTI_SUCCESS) return 0;
  for (CUpti_ActivityKind kind : {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                  CUPTI_ACTIVITY_KIND_MEMSET}) {
    if (cuptiActivityEnable(kind) != CUPTI_SUCCESS) {
      std::fprintf(stderr, "cupti_trace: activity kind %d not enabled\n", static_cast<int>(kind));
    }
  }
  std::atexit(Write);
  return 1;
}
