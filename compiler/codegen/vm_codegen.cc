#include "compiler/codegen/vm_codegen.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "compiler/codegen/memory_planner.h"
#include "compiler/shape/shape_check.h"
#include "vm/isa/instruction.h"
#include "vm/runtime/value.h"

namespace nimble::compiler {
namespace {

using vm::Instruction;
using vm::Opcode;
using vm::ScalarOp;

enum class NodeKind {
  kShape,     // output is a known symbolic shape value: nothing to run
  kView,      // reshape-like: a ReshapeTensor view of the input
  kCompute,   // a kernel call into planned or pre-allocated outputs
  kRuntime,   // a kernel call in shape-function mode (data-dependent output shapes)
  kControl,   // If / Loop: subgraphs emitted inline with jumps
  kSequence,  // ONNX sequence / optional ops: ADT instructions (and variadic kernels)
};

// Ops on ONNX sequences and optionals, lowered to ADT instructions rather than plain kernels.
bool IsSequenceOp(const Node& node) {
  static const absl::flat_hash_set<std::string> kOps = {
      "SequenceConstruct", "SequenceEmpty",  "SequenceAt",         "SequenceInsert",
      "SequenceErase",     "SequenceLength", "SplitToSequence",    "ConcatFromSequence",
      "SequenceMap",       "Optional",       "OptionalHasElement", "OptionalGetElement"};
  if (!node.domain().empty() && node.domain() != "ai.onnx") return false;
  if (kOps.contains(node.op_type())) return true;
  return node.op_type() == "Identity" && node.input(0) != nullptr &&
         !node.input(0)->type().is_tensor();
}

// Ops that put tensors into sequences or optionals: those tensors outlive their last use as
// graph values, so they must not live in the arena.
bool StoresTensors(const Node& node) {
  const std::string& op = node.op_type();
  return op == "SequenceConstruct" || op == "SequenceInsert" || op == "Optional" ||
         op == "SequenceMap";
}

bool GraphStoresTensors(const Graph& g) {
  for (const auto& node : g.nodes()) {
    if (StoresTensors(*node)) return true;
    for (const auto& [name, sub] : node->subgraphs()) {
      if (GraphStoresTensors(*sub)) return true;
    }
  }
  return false;
}

vm::ValueKind KindOfType(const Type& t) {
  switch (t.kind) {
    case Type::Kind::kTensor:
      return vm::ValueKind::kTensor;
    case Type::Kind::kSequence:
      return vm::ValueKind::kSequence;
    case Type::Kind::kOptional:
      return t.optional_of_sequence ? vm::ValueKind::kOptionalSequence : vm::ValueKind::kOptional;
  }
  return vm::ValueKind::kTensor;
}

// The node's attributes as its kernel gets them: without compiler-internal annotations ("_..."),
// plus what the compiler knows about the operands: a weight that is a constant of the
// executable (constant_b / constant_w) may be repacked once into the layout the GEMM or
// convolution prefers.
vm::Attributes KernelAttributes(const Node& node) {
  vm::Attributes attrs;
  for (const auto& [name, value] : node.attrs().values()) {
    if (name.empty() || name[0] != '_') attrs.Set(name, value);
  }
  if (!node.domain().empty()) return attrs;
  const std::string& op = node.op_type();
  const Value* weight = node.input(1);
  if (weight != nullptr && weight->is_constant()) {
    if (op == "MatMul" || op == "Gemm" || op == "FusedMatMul") attrs.Set("constant_b", int64_t{1});
    if (op == "Conv" || op == "ConvTranspose") attrs.Set("constant_w", int64_t{1});
  }
  return attrs;
}

bool IsViewOp(const Node& node) {
  static const std::set<std::string> kViews = {"Reshape", "Flatten", "Squeeze", "Unsqueeze",
                                               "Identity"};
  return node.domain().empty() && kViews.count(node.op_type()) != 0 && node.num_outputs() == 1 &&
         node.input(0) != nullptr && node.input(0)->type().is_tensor();
}

// Content hash of a tensor (dtype, shape, bytes) for sharing constants between variants.
uint64_t TensorHash(const vm::Tensor& t) {
  uint64_t h = 1469598103934665603ull ^ static_cast<uint64_t>(t.dtype());
  for (int64_t d : t.shape()) h = (h ^ static_cast<uint64_t>(d)) * 1099511628211ull;
  if (t.dtype() == vm::DType::kString) {
    for (int64_t i = 0; i < t.num_elements(); ++i) {
      for (char c : t.data<std::string>()[i])
        h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    }
    return h;
  }
  const auto* bytes = static_cast<const unsigned char*>(t.raw_data());
  const size_t n = t.nbytes();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes + i, 8);
    h = (h ^ w) * 1099511628211ull;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  return h;
}

bool SameTensor(const vm::Tensor& a, const vm::Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  if (a.dtype() == vm::DType::kString) {
    for (int64_t i = 0; i < a.num_elements(); ++i) {
      if (a.data<std::string>()[i] != b.data<std::string>()[i]) return false;
    }
    return true;
  }
  return std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

class FunctionEmitter {
 public:
  FunctionEmitter(Module& module, vm::Executable& exe, const EmitOptions& options)
      : module_(module), dims_(module.dims), exe_(exe), options_(options) {}

  absl::StatusOr<int> Run(CodegenReport* report);

 private:
  // --- instruction building
  int NewReg() { return fn_.num_registers++; }
  void Emit(Opcode op, int dst, int a = -1, int b = -1, int c = -1, int64_t imm = 0,
            const std::vector<int64_t>& list = {}) {
    Instruction ins;
    ins.op = op;
    ins.dst = dst;
    ins.a = a;
    ins.b = b;
    ins.c = c;
    ins.imm = imm;
    ins.list_begin = static_cast<uint32_t>(fn_.operand_pool.size());
    ins.list_size = static_cast<uint32_t>(list.size());
    fn_.operand_pool.insert(fn_.operand_pool.end(), list.begin(), list.end());
    fn_.code.push_back(ins);
  }
  int AddConstant(const vm::Tensor& t) {
    const uint64_t h = TensorHash(t);
    for (size_t i = 0; i < exe_.constants.size(); ++i) {
      // Hashes of existing constants are computed lazily and cached.
      if (i >= constant_hashes_.size()) constant_hashes_.push_back(TensorHash(exe_.constants[i]));
      if (constant_hashes_[i] == h && SameTensor(exe_.constants[i], t)) return static_cast<int>(i);
    }
    exe_.constants.push_back(t);
    constant_hashes_.push_back(h);
    return static_cast<int>(exe_.constants.size()) - 1;
  }
  int AddString(std::string s) {
    exe_.strings.push_back(std::move(s));
    return static_cast<int>(exe_.strings.size()) - 1;
  }

  // --- symbols and scalar arithmetic
  bool AtomsBound(const DimExpr& e) const;
  bool TypeBound(const TensorType& t) const;
  absl::StatusOr<int> EmitDim(const DimExpr& e);
  absl::StatusOr<int> EmitAtom(int32_t atom);
  absl::StatusOr<std::vector<int64_t>> EmitDims(const TensorType& t);
  void BindSymbolsFrom(const TensorType& t, int tensor_reg);

  // --- values
  absl::StatusOr<int> Materialize(const Value* v) { return MaterializeOn(v, 0); }
  // The register holding `v` on device index `device` (copied there once if it lives elsewhere).
  absl::StatusOr<int> MaterializeOn(const Value* v, int device);
  // The inputs of `node` that its kernel on options_.device reads on the host.
  std::vector<int> HostInputs(const Node& node) const;
  // v's register where it lives, and that device index.
  absl::StatusOr<std::pair<int, int>> MaterializeHome(const Value* v);
  int DeviceIndex(vm::Device d);
  bool PlaceOnDevice(const Node& node) const;
  bool IsShapeValue(const Value* v) const;

  NodeKind Classify(const Node& node) const;
  void NoteClassified(const Node& node, NodeKind kind);
  absl::Status Analyse();
  absl::Status EmitNode(int index, const Node& node, NodeKind kind);
  absl::Status EmitSubgraph(const Graph& g);
  absl::Status EmitChecks(const Node& node);
  absl::Status EmitIf(const Node& node);
  absl::Status EmitLoop(const Node& node);
  absl::Status EmitScan(const Node& node);
  absl::Status EmitSequenceOp(const Node& node);
  absl::Status EmitSequenceMap(const Node& node);
  // A scalar register holding element 0 of the integer tensor `v` (a position or count).
  absl::StatusOr<int> ScalarOf(const Value* v);
  // Rebinds the symbols of `v`'s dims from the tensor in `reg` (values whose shape may change
  // from one loop iteration to the next).
  void RebindSymbols(const Value* v, int reg);
  absl::Status AllocateOwn(const Value* out, int reg);
  absl::Status AllocateOwnType(const TensorType& t, int reg, int device = 0);
  // Jumps are relative; these patch a jump emitted earlier to land on the next instruction.
  int Here() const { return static_cast<int>(fn_.code.size()); }
  void PatchJumpB(int at) { fn_.code[at].b = Here() - at; }
  void PatchJumpC(int at) { fn_.code[at].c = Here() - at; }
  void PatchGoto(int at) { fn_.code[at].a = Here() - at; }
  // Scoped emission state: symbol registers and memoised dims made inside a branch or loop
  // body are not valid after it.
  struct Scope {
    absl::flat_hash_set<int32_t> bound;
    absl::flat_hash_map<int32_t, int> symbol_reg;
    std::map<DimExpr, int> dim_reg;
    absl::flat_hash_map<const Value*, int> reg_of;
    std::map<std::pair<const Value*, int>, int> copies;
  };
  Scope SaveScope() const { return {bound_, symbol_reg_, dim_reg_, reg_of_, copies_}; }
  void RestoreScope(Scope scope) {
    copies_ = std::move(scope.copies);
    bound_ = std::move(scope.bound);
    symbol_reg_ = std::move(scope.symbol_reg);
    dim_reg_ = std::move(scope.dim_reg);
    reg_of_ = std::move(scope.reg_of);
  }
  absl::StatusOr<int> KernelIndex(const Node& node, int device = 0);
  bool KernelAllocates(const Node& node) const;

  Module& module_;
  DimContext& dims_;
  vm::Executable& exe_;
  const EmitOptions options_;
  vm::Function fn_;
  std::vector<uint64_t> constant_hashes_;

  absl::flat_hash_set<int32_t> bound_;  // symbols with a register (during emission)
  absl::flat_hash_map<int32_t, int> symbol_reg_;
  std::map<DimExpr, int> dim_reg_;
  absl::flat_hash_map<const Value*, int> reg_of_;
  // Device index (into exe_.devices) of each value's home register; absent: the host (0).
  absl::flat_hash_map<const Value*, int> value_device_;
  std::map<std::pair<const Value*, int>, int> copies_;  // (value, device) -> copy's register
  absl::flat_hash_map<const Node*, int> node_device_;   // main-graph nodes placed off the host
  int null_reg_ = -1;
  mutable absl::flat_hash_map<const Node*, bool> allocates_;

  // Analysis results (main graph).
  const Graph* main_ = nullptr;
  std::vector<NodeKind> kind_;
  absl::flat_hash_map<const Value*, const Value*> root_;  // view aliasing
  absl::flat_hash_map<const Value*, int> last_use_;       // of alias roots
  absl::flat_hash_set<const Value*> escapes_;             // roots of graph outputs
  absl::flat_hash_set<const Value*> vm_allocated_;        // outputs of shape-function calls
  absl::flat_hash_map<const Value*, int> planned_;        // root -> request index
  std::vector<BufferRequest> requests_;
  std::vector<int> request_device_;  // device index per request
  // One arena per device: its plan over the device's requests (local indices).
  struct Arena {
    std::vector<int> requests;  // global request indices
    absl::flat_hash_map<int, int> local;
    MemoryPlan plan;
    int reg = -1;
    std::vector<int> slot_offset_reg;
  };
  std::map<int, Arena> arenas_;
  CodegenReport report_;
};

bool FunctionEmitter::AtomsBound(const DimExpr& e) const {
  for (const auto& [monomial, coeff] : e.terms()) {
    for (int32_t atom : monomial) {
      const auto& info = dims_.atom(atom);
      if (info.kind == DimContext::AtomKind::kSymbol) {
        if (!bound_.contains(atom)) return false;
      } else if (!AtomsBound(info.lhs) || !AtomsBound(info.rhs)) {
        return false;
      }
    }
  }
  return true;
}

bool FunctionEmitter::TypeBound(const TensorType& t) const {
  if (!t.fully_known()) return false;
  for (const Dim& d : *t.dims) {
    if (!AtomsBound(*d)) return false;
  }
  return true;
}

absl::StatusOr<int> FunctionEmitter::EmitAtom(int32_t atom) {
  const auto& info = dims_.atom(atom);
  if (info.kind == DimContext::AtomKind::kSymbol) {
    auto it = symbol_reg_.find(atom);
    if (it == symbol_reg_.end()) {
      return absl::InternalError(absl::StrCat("symbol '", info.name, "' used before it is bound"));
    }
    return it->second;
  }
  NIMBLE_ASSIGN_OR_RETURN(int lhs, EmitDim(info.lhs));
  NIMBLE_ASSIGN_OR_RETURN(int rhs, EmitDim(info.rhs));
  ScalarOp op = ScalarOp::kAdd;
  switch (info.kind) {
    case DimContext::AtomKind::kFloorDiv:
      op = ScalarOp::kFloorDiv;
      break;
    case DimContext::AtomKind::kCeilDiv:
      op = ScalarOp::kCeilDiv;
      break;
    case DimContext::AtomKind::kMod:
      op = ScalarOp::kMod;
      break;
    case DimContext::AtomKind::kMin:
      op = ScalarOp::kMin;
      break;
    case DimContext::AtomKind::kMax:
      op = ScalarOp::kMax;
      break;
    case DimContext::AtomKind::kSymbol:
      break;
  }
  const int dst = NewReg();
  Emit(Opcode::kScalarBinary, dst, lhs, rhs, static_cast<int>(op));
  return dst;
}

absl::StatusOr<int> FunctionEmitter::EmitDim(const DimExpr& e) {
  if (auto it = dim_reg_.find(e); it != dim_reg_.end()) return it->second;
  int result = -1;
  if (e.IsConst()) {
    result = NewReg();
    Emit(Opcode::kLoadConsti, result, -1, -1, -1, e.ConstValue());
  } else if (auto atom = e.AsAtom()) {
    NIMBLE_ASSIGN_OR_RETURN(result, EmitAtom(*atom));
  } else {
    int64_t constant = 0;
    for (const auto& [monomial, coeff] : e.terms()) {
      if (monomial.empty()) {
        constant = coeff;
        continue;
      }
      // Product of the monomial's atoms (memoised as a sub-expression), times the coefficient.
      DimExpr mono = DimExpr::Const(1);
      int reg = -1;
      for (int32_t atom : monomial) {
        mono = mono * DimExpr::Atom(atom);
        if (auto it = dim_reg_.find(mono); it != dim_reg_.end()) {
          reg = it->second;
          continue;
        }
        NIMBLE_ASSIGN_OR_RETURN(int a, EmitAtom(atom));
        if (reg < 0) {
          reg = a;
        } else {
          const int dst = NewReg();
          Emit(Opcode::kScalarBinary, dst, reg, a, static_cast<int>(ScalarOp::kMul));
          reg = dst;
        }
        dim_reg_[mono] = reg;
      }
      if (coeff != 1) {
        const int dst = NewReg();
        Emit(Opcode::kScalarBinaryImm, dst, reg, -1, static_cast<int>(ScalarOp::kMul), coeff);
        reg = dst;
      }
      if (result < 0) {
        result = reg;
      } else {
        const int dst = NewReg();
        Emit(Opcode::kScalarBinary, dst, result, reg, static_cast<int>(ScalarOp::kAdd));
        result = dst;
      }
    }
    if (constant != 0) {
      const int dst = NewReg();
      Emit(Opcode::kScalarBinaryImm, dst, result, -1, static_cast<int>(ScalarOp::kAdd), constant);
      result = dst;
    }
  }
  dim_reg_[e] = result;
  return result;
}

absl::StatusOr<std::vector<int64_t>> FunctionEmitter::EmitDims(const TensorType& t) {
  std::vector<int64_t> regs;
  for (const Dim& d : *t.dims) {
    NIMBLE_ASSIGN_OR_RETURN(int r, EmitDim(*d));
    regs.push_back(r);
  }
  return regs;
}

void FunctionEmitter::BindSymbolsFrom(const TensorType& t, int tensor_reg) {
  if (!t.dims) return;
  for (int axis = 0; axis < t.rank(); ++axis) {
    const Dim& d = (*t.dims)[axis];
    if (!d) continue;
    auto atom = d->AsAtom();
    if (!atom || dims_.atom(*atom).kind != DimContext::AtomKind::kSymbol ||
        bound_.contains(*atom)) {
      continue;
    }
    const int r = NewReg();
    Emit(Opcode::kTensorDim, r, tensor_reg, axis);
    bound_.insert(*atom);
    symbol_reg_[*atom] = r;
    dim_reg_[*d] = r;
  }
}

bool FunctionEmitter::IsShapeValue(const Value* v) const {
  if (!v->symbolic_value() || !v->type().is_tensor()) return false;
  const TensorType& t = v->tensor_type();
  if (t.dtype != vm::DType::kI64 || !t.has_rank() || t.rank() > 1) return false;
  for (const DimExpr& e : *v->symbolic_value()) {
    if (!AtomsBound(e)) return false;
  }
  return true;
}

absl::StatusOr<std::pair<int, int>> FunctionEmitter::MaterializeHome(const Value* v) {
  if (v == nullptr) {
    if (null_reg_ < 0) null_reg_ = NewReg();  // never written: reads as an absent tensor
    return std::make_pair(null_reg_, 0);
  }
  if (auto it = reg_of_.find(v); it != reg_of_.end()) {
    auto d = value_device_.find(v);
    return std::make_pair(it->second, d == value_device_.end() ? 0 : d->second);
  }
  if (v->is_constant()) {
    const int r = NewReg();
    Emit(Opcode::kLoadConst, r, AddConstant(*v->constant()));
    reg_of_[v] = r;
    return std::make_pair(r, 0);
  }
  if (IsShapeValue(v)) {
    std::vector<int64_t> elems;
    for (const DimExpr& e : *v->symbolic_value()) {
      NIMBLE_ASSIGN_OR_RETURN(int r, EmitDim(e));
      elems.push_back(r);
    }
    int r = NewReg();
    Emit(Opcode::kMakeShapeTensor, r, -1, -1, -1, 0, elems);
    if (v->tensor_type().rank() == 0) {
      const int scalar = NewReg();
      Emit(Opcode::kReshapeTensor, scalar, r);
      r = scalar;
    }
    reg_of_[v] = r;
    return std::make_pair(r, 0);
  }
  return absl::InternalError(
      absl::StrCat("value %", v->id(), " '", v->name(), "' is used before it is computed"));
}

std::vector<int> FunctionEmitter::HostInputs(const Node& node) const {
  const std::string name =
      node.domain().empty() ? node.op_type() : absl::StrCat(node.domain(), ".", node.op_type());
  return vm::KernelRegistry::Global().Traits(name, options_.device.type).host_inputs;
}

// Whether inputs go to the device at entry (Run): NIMBLE_CODEGEN_HOIST_INPUT_COPIES=1. Off by
// default (an A/B switch: on the H100 it changed BERT-base's p50 by no more than the rounds'
// spread, bench/RESULTS.md): otherwise each input's device copy comes right before its first
// device reader.
static bool HoistInputCopies() {
  const char* v = std::getenv("NIMBLE_CODEGEN_HOIST_INPUT_COPIES");
  return v != nullptr && v[0] == '1';
}

absl::StatusOr<int> FunctionEmitter::MaterializeOn(const Value* v, int device) {
  if (v == nullptr) {
    if (null_reg_ < 0) null_reg_ = NewReg();
    return null_reg_;
  }
  if (device != 0 && v->is_constant() && !reg_of_.contains(v)) {
    // Weights go to the device straight from the executable (uploaded once, then cached).
    if (auto it = copies_.find({v, device}); it != copies_.end()) return it->second;
    const int r = NewReg();
    Emit(Opcode::kLoadConstOn, r, AddConstant(*v->constant()), device);
    copies_[{v, device}] = r;
    return r;
  }
  NIMBLE_ASSIGN_OR_RETURN(auto home, MaterializeHome(v));
  if (home.second == device) return home.first;
  if (auto it = copies_.find({v, device}); it != copies_.end()) return it->second;
  // A view (reshape) of a value already copied to `device`, such as a hoisted input, is the same
  // reshape of that copy.
  // (Only reshapes of known dims: root_ also maps OptionalGetElement's pass-through.)
  if (auto root = root_.find(v); device != 0 && root != root_.end() && root->second != v &&
                                 v->type().is_tensor() && TypeBound(v->tensor_type())) {
    if (auto c = copies_.find({root->second, device}); c != copies_.end()) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> dim_regs, EmitDims(v->tensor_type()));
      const int r = NewReg();
      Emit(Opcode::kReshapeTensor, r, c->second, -1, -1, 0, dim_regs);
      copies_[{v, device}] = r;
      return r;
    }
  }
  const int r = NewReg();
  Emit(Opcode::kDeviceCopy, r, home.first, home.second, device);
  ++report_.num_device_copies;
  copies_[{v, device}] = r;
  return r;
}

int FunctionEmitter::DeviceIndex(vm::Device d) {
  for (size_t i = 0; i < exe_.devices.size(); ++i) {
    if (exe_.devices[i] == d) return static_cast<int>(i);
  }
  exe_.devices.push_back(d);
  return static_cast<int>(exe_.devices.size()) - 1;
}

bool FunctionEmitter::PlaceOnDevice(const Node& node) const {
  if (options_.device.type == vm::DeviceType::kCPU) return false;
  const std::string name =
      node.domain().empty() ? node.op_type() : absl::StrCat(node.domain(), ".", node.op_type());
  const vm::KernelRegistry& registry = vm::KernelRegistry::Global();
  if (!registry.Has(name, options_.device.type)) return false;
  std::vector<vm::DType> ins, outs;
  for (const Value* in : node.inputs()) {
    if (in == nullptr) {
      ins.push_back(vm::DType::kInvalid);
      continue;
    }
    if (!in->type().is_tensor()) return false;
    ins.push_back(in->tensor_type().dtype);
  }
  for (const Value* out : node.outputs()) {
    if (!out->type().is_tensor()) return false;
    outs.push_back(out->tensor_type().dtype);
  }
  const vm::KernelTraits traits = registry.Traits(name, options_.device.type);
  if (traits.supports && !traits.supports(ins, outs, KernelAttributes(node))) return false;
  return registry.Create(name, options_.device.type, KernelAttributes(node)).ok();
}

absl::StatusOr<int> FunctionEmitter::KernelIndex(const Node& node, int device) {
  vm::KernelEntry entry;
  entry.name =
      node.domain().empty() ? node.op_type() : absl::StrCat(node.domain(), ".", node.op_type());
  entry.device = exe_.devices[device];
  if (device != 0) {
    entry.attrs = KernelAttributes(node);
    exe_.kernels.push_back(std::move(entry));
    return static_cast<int>(exe_.kernels.size()) - 1;
  }
  entry.attrs = KernelAttributes(node);
  if (!vm::KernelRegistry::Global().Has(entry.name, vm::DeviceType::kCPU)) {
    return absl::UnimplementedError(
        absl::StrCat("unsupported operator '", node.op_type(), "' (domain '", node.domain(),
                     "', opset ", node.opset(), ") at ", node.Describe(), ": no CPU kernel"));
  }
  exe_.kernels.push_back(std::move(entry));
  return static_cast<int>(exe_.kernels.size()) - 1;
}

// Whether the node's kernel allocates its own outputs (upper-bound shapes: NonZero, Unique,
// ...). Creating the kernel here also reports bad attributes at compile time.
bool FunctionEmitter::KernelAllocates(const Node& node) const {
  if (auto it = allocates_.find(&node); it != allocates_.end()) return it->second;
  const std::string name =
      node.domain().empty() ? node.op_type() : absl::StrCat(node.domain(), ".", node.op_type());
  auto kernel =
      vm::KernelRegistry::Global().Create(name, vm::DeviceType::kCPU, KernelAttributes(node));
  const bool allocates = kernel.ok() && (*kernel)->allocates_outputs();
  allocates_[&node] = allocates;
  return allocates;
}

NodeKind FunctionEmitter::Classify(const Node& node) const {
  if (IsSequenceOp(node)) return NodeKind::kSequence;
  if (!node.subgraphs().empty()) return NodeKind::kControl;
  bool all_shape = node.num_outputs() > 0;
  for (const Value* out : node.outputs()) all_shape = all_shape && IsShapeValue(out);
  if (all_shape) return NodeKind::kShape;
  bool outputs_known = true;
  for (const Value* out : node.outputs()) {
    outputs_known = outputs_known && out->type().is_tensor() && TypeBound(out->tensor_type());
  }
  if (IsViewOp(node) && outputs_known) return NodeKind::kView;
  auto mode = node.attrs().Get<std::string>("_shape_mode");
  if (!outputs_known || (mode.ok() && *mode == "runtime") || KernelAllocates(node)) {
    return NodeKind::kRuntime;
  }
  return NodeKind::kCompute;
}

// Symbols a node's execution binds (runtime shapes, control-flow results): what Classify of
// later nodes may rely on.
void FunctionEmitter::NoteClassified(const Node& node, NodeKind kind) {
  if (kind != NodeKind::kRuntime && kind != NodeKind::kControl && kind != NodeKind::kSequence) {
    return;
  }
  for (const Value* out : node.outputs()) {
    const TensorType& t = out->tensor_type();
    if (!out->type().is_tensor() || !t.dims) continue;
    for (const Dim& d : *t.dims) {
      if (d && d->AsAtom() && dims_.atom(*d->AsAtom()).kind == DimContext::AtomKind::kSymbol) {
        bound_.insert(*d->AsAtom());
      }
    }
  }
}

namespace {

// Outer values a subgraph (and its nested subgraphs) reads.
void CollectCaptures(const Graph& g, std::vector<const Value*>& out) {
  for (const Value* c : g.captures()) out.push_back(c);
  for (const auto& node : g.nodes()) {
    for (const auto& [name, sub] : node->subgraphs()) CollectCaptures(*sub, out);
  }
}

}  // namespace

absl::Status FunctionEmitter::Analyse() {
  const Graph& g = *module_.main;
  main_ = &g;
  const auto& nodes = g.nodes();
  kind_.assign(nodes.size(), NodeKind::kCompute);
  for (const Value* in : g.inputs()) root_[in] = in;
  auto root_of = [&](const Value* v) { return root_.count(v) ? root_[v] : v; };
  auto use = [&](const Value* v, int i) {
    const Value* root = root_of(v);
    last_use_[root] = std::max(last_use_.count(root) ? last_use_[root] : 0, i);
  };

  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& node = *nodes[i];
    const NodeKind kind = Classify(node);
    kind_[i] = kind;
    NoteClassified(node, kind);
    if (kind == NodeKind::kCompute && PlaceOnDevice(node)) {
      node_device_[&node] = DeviceIndex(options_.device);
    }
    if (kind == NodeKind::kShape) continue;
    for (const Value* in : node.inputs()) {
      if (in != nullptr) use(in, static_cast<int>(i));
    }
    std::vector<const Value*> captures;
    for (const auto& [name, sub] : node.subgraphs()) CollectCaptures(*sub, captures);
    for (const Value* c : captures) use(c, static_cast<int>(i));
    // Tensors stored into sequences (here or inside subgraphs) live as long as the sequence.
    bool stores =
        StoresTensors(node) ||
        (node.op_type() == "Loop" && !node.subgraphs().empty() && node.subgraphs().count("body") &&
         static_cast<int>(node.subgraphs().at("body")->outputs().size()) > node.num_inputs() - 1);
    for (const auto& [name, sub] : node.subgraphs()) stores = stores || GraphStoresTensors(*sub);
    if (stores) {
      for (const Value* in : node.inputs()) {
        if (in != nullptr && in->type().is_tensor()) escapes_.insert(root_of(in));
      }
      for (const Value* c : captures) {
        if (c->type().is_tensor()) escapes_.insert(root_of(c));
      }
    }
    const bool passthrough =
        kind == NodeKind::kSequence &&
        (node.op_type() == "Identity" || node.op_type() == "OptionalGetElement") &&
        node.input(0) != nullptr && node.input(0)->type().is_tensor();
    if (kind == NodeKind::kView || passthrough) {
      root_[node.output(0)] = root_of(node.input(0));
      continue;
    }
    for (const Value* out : node.outputs()) {
      root_[out] = out;
      if (kind == NodeKind::kCompute) {
        last_use_[out] = std::max(last_use_.count(out) ? last_use_[out] : 0, static_cast<int>(i));
      } else {
        vm_allocated_.insert(out);  // allocated by the VM or owned by a control-flow result
      }
    }
  }
  for (const Value* out : g.outputs()) escapes_.insert(root_of(out));
  return absl::OkStatus();
}

absl::Status FunctionEmitter::AllocateOwn(const Value* out, int reg) {
  return AllocateOwnType(out->tensor_type(), reg);
}

absl::Status FunctionEmitter::AllocateOwnType(const TensorType& t, int reg, int device) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> dim_regs, EmitDims(t));
  NIMBLE_ASSIGN_OR_RETURN(int elems, EmitDim(*t.NumElements()));
  const int bytes = NewReg();
  Emit(Opcode::kScalarBinaryImm, bytes, elems, -1, static_cast<int>(ScalarOp::kMul),
       static_cast<int64_t>(vm::DTypeSize(t.dtype)));
  const int storage = NewReg();
  Emit(Opcode::kAllocStorage, storage, bytes, device, MemoryPlan::kAlignment);
  NIMBLE_ASSIGN_OR_RETURN(int offset, EmitDim(DimExpr::Const(0)));
  Emit(Opcode::kAllocTensorReg, reg, storage, offset, static_cast<int>(t.dtype), 0, dim_regs);
  return absl::OkStatus();
}

// Facts type inference could not prove (gradual typing) become VM asserts before the node.
absl::Status FunctionEmitter::EmitChecks(const Node& node) {
  NIMBLE_ASSIGN_OR_RETURN(std::vector<ShapeCheck> checks, DecodeShapeChecks(node, dims_));
  for (const ShapeCheck& check : checks) {
    if (!AtomsBound(check.lhs) || !AtomsBound(check.rhs)) continue;  // checked by the kernel
    NIMBLE_ASSIGN_OR_RETURN(int lhs, EmitDim(check.lhs));
    NIMBLE_ASSIGN_OR_RETURN(int rhs, EmitDim(check.rhs));
    const int ok = NewReg();
    switch (check.kind) {
      case ShapeCheck::Kind::kEqual:
        Emit(Opcode::kScalarBinary, ok, lhs, rhs, static_cast<int>(ScalarOp::kEq));
        break;
      case ShapeCheck::Kind::kNotEqual:
        Emit(Opcode::kScalarBinary, ok, lhs, rhs, static_cast<int>(ScalarOp::kNe));
        break;
      case ShapeCheck::Kind::kLessEqual:
        Emit(Opcode::kScalarBinary, ok, lhs, rhs, static_cast<int>(ScalarOp::kLe));
        break;
      case ShapeCheck::Kind::kBroadcastable: {
        const int equal = NewReg(), one = NewReg();
        Emit(Opcode::kScalarBinary, equal, lhs, rhs, static_cast<int>(ScalarOp::kEq));
        Emit(Opcode::kScalarBinaryImm, one, lhs, -1, static_cast<int>(ScalarOp::kEq), 1);
        Emit(Opcode::kScalarBinary, ok, equal, one, static_cast<int>(ScalarOp::kOr));
        break;
      }
    }
    Emit(Opcode::kAssert, -1, ok,
         AddString(absl::StrCat(node.Describe(), ": ", check.message, " (",
                                dims_.ToString(check.lhs), " = {}, ", dims_.ToString(check.rhs),
                                " = {})")),
         -1, 0, {lhs, rhs});
  }
  return absl::OkStatus();
}

absl::Status FunctionEmitter::EmitNode(int index, const Node& node, NodeKind kind) {
  NIMBLE_RETURN_IF_ERROR(EmitChecks(node));
  // Static shapes whose element count overflows can never be allocated: say so now.
  for (const Value* out : node.outputs()) {
    if (!out->type().is_tensor() || !out->tensor_type().is_static()) continue;
    const std::vector<int64_t> dims = out->tensor_type().StaticDims();
    auto count = vm::NumElements(dims);
    if (!count.ok()) return count.status();
  }
  switch (kind) {
    case NodeKind::kShape:
      ++report_.num_shape_nodes_elided;
      return absl::OkStatus();
    case NodeKind::kView: {
      NIMBLE_ASSIGN_OR_RETURN(auto home, MaterializeHome(node.input(0)));
      const int in = home.first;
      if (home.second != 0) value_device_[node.output(0)] = home.second;
      NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> dim_regs,
                              EmitDims(node.output(0)->tensor_type()));
      const int dst = NewReg();
      Emit(Opcode::kReshapeTensor, dst, in, -1, -1, 0, dim_regs);
      reg_of_[node.output(0)] = dst;
      ++report_.num_views;
      return absl::OkStatus();
    }
    case NodeKind::kControl:
      if (node.op_type() == "If") return EmitIf(node);
      if (node.op_type() == "Loop") return EmitLoop(node);
      if (node.op_type() == "Scan") return EmitScan(node);
      return absl::UnimplementedError(
          absl::StrCat("control flow op ", node.op_type(), " is not lowered yet"));
    case NodeKind::kSequence:
      return EmitSequenceOp(node);
    case NodeKind::kCompute:
    case NodeKind::kRuntime:
      break;
  }
  int device = 0;
  if (index >= 0 && kind == NodeKind::kCompute) {
    if (auto it = node_device_.find(&node); it != node_device_.end()) device = it->second;
  }
  std::vector<int> host_inputs;
  if (device != 0) {
    host_inputs = HostInputs(node);
    ++report_.num_device_kernel_calls;
  }
  std::vector<int64_t> args;
  for (int i = 0; i < node.num_inputs(); ++i) {
    const bool host = std::find(host_inputs.begin(), host_inputs.end(), i) != host_inputs.end();
    NIMBLE_ASSIGN_OR_RETURN(int r, MaterializeOn(node.input(i), host ? 0 : device));
    args.push_back(r);
  }
  NIMBLE_ASSIGN_OR_RETURN(int kernel, KernelIndex(node, device));
  const bool runtime = kind == NodeKind::kRuntime;
  std::vector<vm::DType> out_dtypes;
  for (const Value* out : node.outputs()) {
    const int r = NewReg();
    reg_of_[out] = r;
    if (device != 0) value_device_[out] = device;
    args.push_back(r);
    out_dtypes.push_back(out->tensor_type().dtype);
    if (runtime) continue;
    auto it = planned_.find(out);
    if (index >= 0 && it != planned_.end()) {
      NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> dim_regs, EmitDims(out->tensor_type()));
      Arena& arena = arenas_.at(request_device_[it->second]);
      Emit(Opcode::kAllocTensorReg, r, arena.reg,
           arena.slot_offset_reg[arena.plan.slot_of[arena.local.at(it->second)]],
           static_cast<int>(out->tensor_type().dtype), 0, dim_regs);
    } else {
      // Own storage: graph outputs (they outlive the call's arena), buffers whose size depends
      // on symbols bound mid-function, and everything inside control flow.
      NIMBLE_RETURN_IF_ERROR(AllocateOwnType(out->tensor_type(), r, device));
    }
  }
  const int num_inputs = node.num_inputs();
  if (runtime) {
    if (node.num_outputs() > vm::kMaxShapeFunctionOutputs) {
      return absl::UnimplementedError(absl::StrCat(node.Describe(), " has too many outputs"));
    }
    if (KernelAllocates(node)) {
      Emit(Opcode::kInvokePacked, -1, kernel, num_inputs, vm::kInvokePackedAllocatesOutputs, 0,
           args);
    } else {
      Emit(Opcode::kInvokePacked, -1, kernel, num_inputs, vm::kInvokePackedShapeFunction,
           vm::EncodeOutputDTypes(out_dtypes), args);
    }
    ++report_.num_runtime_shape_calls;
    for (const Value* out : node.outputs()) BindSymbolsFrom(out->tensor_type(), reg_of_[out]);
  } else {
    Emit(Opcode::kInvokePacked, -1, kernel, num_inputs, 0, 0, args);
  }
  ++report_.num_kernel_calls;
  return absl::OkStatus();
}

// A subgraph inline in the current function: no arena (its buffers are allocated as they
// are made and freed by reference counting), classification as emission goes.
absl::Status FunctionEmitter::EmitSubgraph(const Graph& g) {
  for (const auto& node : g.nodes()) {
    const NodeKind kind = Classify(*node);
    absl::Status status = EmitNode(-1, *node, kind);
    if (!status.ok()) return Annotate(status, node->Describe());
  }
  return absl::OkStatus();
}

absl::Status FunctionEmitter::EmitIf(const Node& node) {
  const Graph* then_g =
      node.subgraphs().count("then_branch") ? node.subgraphs().at("then_branch").get() : nullptr;
  const Graph* else_g =
      node.subgraphs().count("else_branch") ? node.subgraphs().at("else_branch").get() : nullptr;
  if (then_g == nullptr || else_g == nullptr) {
    return absl::InvalidArgumentError("If needs then_branch and else_branch");
  }
  if (static_cast<int>(then_g->outputs().size()) != node.num_outputs() ||
      static_cast<int>(else_g->outputs().size()) != node.num_outputs()) {
    return absl::InvalidArgumentError("If branches must have as many outputs as the node");
  }
  // A condition known at compile time: only the taken branch exists (the other may not even
  // type-check; type inference marks which one).
  const std::string taken = node.attrs().GetOr<std::string>(kTakenBranchAttr, "");
  if (!taken.empty()) {
    const Graph* g = taken == "then_branch" ? then_g : else_g;
    NIMBLE_RETURN_IF_ERROR(EmitSubgraph(*g));
    for (int i = 0; i < node.num_outputs(); ++i) {
      NIMBLE_ASSIGN_OR_RETURN(int r, Materialize(g->outputs()[i]));
      reg_of_[node.output(i)] = r;
    }
    return absl::OkStatus();
  }
  NIMBLE_ASSIGN_OR_RETURN(int cond, Materialize(node.input(0)));
  std::vector<int> results;
  for (const Value* out : node.outputs()) {
    results.push_back(NewReg());
    reg_of_[out] = results.back();
  }
  const int branch = Here();
  Emit(Opcode::kIf, -1, cond, 1, 0);  // c patched to the else branch
  std::vector<int> gotos;
  for (const Graph* g : {then_g, else_g}) {
    if (g == else_g) PatchJumpC(branch);
    Scope scope = SaveScope();
    NIMBLE_RETURN_IF_ERROR(EmitSubgraph(*g));
    for (size_t i = 0; i < results.size(); ++i) {
      NIMBLE_ASSIGN_OR_RETURN(int r, Materialize(g->outputs()[i]));
      Emit(Opcode::kMove, results[i], r);
    }
    RestoreScope(std::move(scope));
    gotos.push_back(Here());
    Emit(Opcode::kGoto, -1, 1);
  }
  for (int at : gotos) PatchGoto(at);
  for (const Value* out : node.outputs()) {
    if (out->type().is_tensor()) BindSymbolsFrom(out->tensor_type(), reg_of_[out]);
  }
  return absl::OkStatus();
}

void FunctionEmitter::RebindSymbols(const Value* v, int reg) {
  if (!v->type().is_tensor() || !v->tensor_type().dims) return;
  for (int axis = 0; axis < v->tensor_type().rank(); ++axis) {
    const Dim& d = (*v->tensor_type().dims)[axis];
    auto atom = d ? d->AsAtom() : std::nullopt;
    if (!atom || dims_.atom(*atom).kind != DimContext::AtomKind::kSymbol) continue;
    const int r = NewReg();
    Emit(Opcode::kTensorDim, r, reg, axis);
    bound_.insert(*atom);
    symbol_reg_[*atom] = r;
    dim_reg_[*d] = r;
  }
}

// Scan(states..., scan_inputs...) with body(states..., slices...) -> (states..., slices_out...):
//   n = dim 0 of the scan inputs; outputs [n, ...] allocated up front
//   i = 0; head: if !(i < n) goto exit
//         slices = tensor_select(scan_input, i); body ...
//         Identity(slice_out) into tensor_select(scan_output, i); states = new states
//         i += 1; goto head
// Other scan axes are transposes before (inputs) and after (outputs) the loop; reverse
// directions index the steps from the end.
absl::Status FunctionEmitter::EmitScan(const Node& node) {
  const Graph* body = node.subgraphs().count("body") ? node.subgraphs().at("body").get() : nullptr;
  if (body == nullptr) return absl::InvalidArgumentError("Scan needs a body");
  const int64_t num_scan_inputs = node.attrs().GetOr<int64_t>("num_scan_inputs", 0);
  const int num_states = node.num_inputs() - static_cast<int>(num_scan_inputs);
  const int num_scan_outputs = node.num_outputs() - num_states;
  if (node.opset() < 9) return absl::UnimplementedError("Scan before opset 9 is not lowered");
  if (num_scan_inputs < 1 || num_states < 0 || num_scan_outputs < 0 ||
      static_cast<int>(body->inputs().size()) != node.num_inputs() ||
      static_cast<int>(body->outputs().size()) != node.num_outputs()) {
    return absl::InvalidArgumentError("Scan body inputs/outputs do not match the node");
  }
  // Layout attributes: a scan axis other than 0 is transposed to the front (inputs) or from
  // the front (outputs); a reverse direction walks the steps from the last.
  auto attr_list = [&](const char* name, int64_t count) -> absl::StatusOr<std::vector<int64_t>> {
    std::vector<int64_t> v = node.attrs().GetOr<std::vector<int64_t>>(name, {});
    if (v.empty()) v.assign(static_cast<size_t>(count), 0);
    if (static_cast<int64_t>(v.size()) != count) {
      return absl::InvalidArgumentError(
          absl::StrCat("Scan ", name, " has ", v.size(), " entries, expected ", count));
    }
    return v;
  };
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> in_axes,
                          attr_list("scan_input_axes", num_scan_inputs));
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> in_dirs,
                          attr_list("scan_input_directions", num_scan_inputs));
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> out_axes,
                          attr_list("scan_output_axes", num_scan_outputs));
  NIMBLE_ASSIGN_OR_RETURN(std::vector<int64_t> out_dirs,
                          attr_list("scan_output_directions", num_scan_outputs));
  // perm moving `axis` of a rank-`rank` tensor to the front, or (inverse) back from it.
  auto front_perm = [](int rank, int axis, bool inverse) {
    std::vector<int64_t> perm;
    if (!inverse) {
      perm.push_back(axis);
      for (int i = 0; i < rank; ++i) {
        if (i != axis) perm.push_back(i);
      }
    } else {
      for (int i = 1; i <= axis; ++i) perm.push_back(i);
      perm.push_back(0);
      for (int i = axis + 1; i < rank; ++i) perm.push_back(i);
    }
    return perm;
  };
  auto transpose = [&](int in, std::vector<int64_t> perm, vm::DType dtype) {
    vm::Attributes attrs;
    attrs.Set("perm", std::move(perm));
    exe_.kernels.push_back(vm::KernelEntry{"Transpose", vm::kCpu, attrs});
    const int kernel = static_cast<int>(exe_.kernels.size()) - 1;
    const int out = NewReg();
    Emit(Opcode::kInvokePacked, -1, kernel, 1, vm::kInvokePackedShapeFunction,
         vm::EncodeOutputDTypes({dtype}), {in, out});
    ++report_.num_kernel_calls;
    return out;
  };
  std::vector<int> scan_inputs;
  for (int j = 0; j < num_scan_inputs; ++j) {
    const Value* in = node.input(num_states + j);
    NIMBLE_ASSIGN_OR_RETURN(int r, Materialize(in));
    if (in_dirs[j] != 0 && in_dirs[j] != 1) {
      return absl::InvalidArgumentError("Scan directions must be 0 or 1");
    }
    if (in_axes[j] != 0) {
      const TensorType& t = in->tensor_type();
      if (!t.has_rank()) return absl::UnimplementedError("Scan input axis on an unknown rank");
      const int rank = t.rank();
      const int64_t axis = in_axes[j] < 0 ? in_axes[j] + rank : in_axes[j];
      if (axis < 0 || axis >= rank) {
        return absl::InvalidArgumentError(
            absl::StrCat("Scan input axis ", in_axes[j], " is out of range for rank ", rank));
      }
      if (axis != 0) r = transpose(r, front_perm(rank, static_cast<int>(axis), false), t.dtype);
    }
    scan_inputs.push_back(r);
  }
  const int length = NewReg();
  Emit(Opcode::kTensorDim, length, scan_inputs[0], 0);
  for (int j = 1; j < num_scan_inputs; ++j) {
    const int other = NewReg(), same = NewReg();
    Emit(Opcode::kTensorDim, other, scan_inputs[j], 0);
    Emit(Opcode::kScalarBinary, same, other, length, static_cast<int>(ScalarOp::kEq));
    Emit(Opcode::kAssert, -1, same,
         AddString(
             absl::StrCat(node.Describe(), ": scan input ", j, " has {} steps, input 0 has {}")),
         -1, 0, {other, length});
  }
  std::vector<int> states;
  for (int k = 0; k < num_states; ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int v, Materialize(node.input(k)));
    states.push_back(NewReg());
    Emit(Opcode::kMove, states.back(), v);
  }
  // Scan outputs: their full shapes must be known before the first step. Stacked along axis 0;
  // another output axis is a transpose after the loop.
  std::vector<int> stacked;
  std::vector<int> out_axis(num_scan_outputs, 0);
  for (int k = 0; k < num_scan_outputs; ++k) {
    const Value* out = node.output(num_states + k);
    if (!out->type().is_tensor() || !TypeBound(out->tensor_type())) {
      return absl::UnimplementedError(
          "Scan outputs whose per-step shape is only known inside the body are not lowered yet");
    }
    if (out_dirs[k] != 0 && out_dirs[k] != 1) {
      return absl::InvalidArgumentError("Scan directions must be 0 or 1");
    }
    const TensorType& t = out->tensor_type();
    const int rank = t.rank();
    const int64_t axis = out_axes[k] < 0 ? out_axes[k] + rank : out_axes[k];
    if (axis < 0 || axis >= rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("Scan output axis ", out_axes[k], " is out of range for rank ", rank));
    }
    out_axis[k] = static_cast<int>(axis);
    const int r = NewReg();
    if (axis == 0) {
      NIMBLE_RETURN_IF_ERROR(AllocateOwn(out, r));
      reg_of_[out] = r;
    } else {
      TensorType front = t;
      const std::vector<int64_t> perm = front_perm(rank, static_cast<int>(axis), false);
      for (int i = 0; i < rank; ++i) (*front.dims)[i] = (*t.dims)[perm[i]];
      NIMBLE_RETURN_IF_ERROR(AllocateOwnType(front, r));
    }
    stacked.push_back(r);
  }
  int identity = -1;
  if (num_scan_outputs > 0) {
    exe_.kernels.push_back(vm::KernelEntry{"Identity", vm::kCpu, {}});
    identity = static_cast<int>(exe_.kernels.size()) - 1;
  }
  const int counter = NewReg();
  Emit(Opcode::kLoadConsti, counter, -1, -1, -1, 0);
  const int head = Here();
  const int in_range = NewReg();
  Emit(Opcode::kScalarBinary, in_range, counter, length, static_cast<int>(ScalarOp::kLt));
  const int exit_branch = Here();
  Emit(Opcode::kIf, -1, in_range, 1, 0);
  Scope scope = SaveScope();
  for (int k = 0; k < num_states; ++k) {
    reg_of_[body->inputs()[k]] = states[k];
    RebindSymbols(body->inputs()[k], states[k]);
  }
  // Reverse steps index from the end: length - 1 - counter.
  int reversed = -1;
  auto step_index = [&](bool reverse) {
    if (!reverse) return counter;
    if (reversed < 0) {
      const int last = NewReg();
      Emit(Opcode::kScalarBinaryImm, last, length, -1, static_cast<int>(ScalarOp::kAdd), -1);
      reversed = NewReg();
      Emit(Opcode::kScalarBinary, reversed, last, counter, static_cast<int>(ScalarOp::kSub));
    }
    return reversed;
  };
  for (int j = 0; j < num_scan_inputs; ++j) {
    const int slice = NewReg();
    Emit(Opcode::kTensorSelect, slice, scan_inputs[j], step_index(in_dirs[j] != 0));
    reg_of_[body->inputs()[num_states + j]] = slice;
    RebindSymbols(body->inputs()[num_states + j], slice);
  }
  NIMBLE_RETURN_IF_ERROR(EmitSubgraph(*body));
  for (int k = 0; k < num_scan_outputs; ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int step, Materialize(body->outputs()[num_states + k]));
    const int slot = NewReg();
    Emit(Opcode::kTensorSelect, slot, stacked[k], step_index(out_dirs[k] != 0));
    Emit(Opcode::kInvokePacked, -1, identity, 1, 0, 0, {step, slot});
  }
  std::vector<int> next;
  for (int k = 0; k < num_states; ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int r, Materialize(body->outputs()[k]));
    next.push_back(NewReg());
    Emit(Opcode::kMove, next.back(), r);
  }
  for (int k = 0; k < num_states; ++k) Emit(Opcode::kMove, states[k], next[k]);
  RestoreScope(std::move(scope));
  Emit(Opcode::kScalarBinaryImm, counter, counter, -1, static_cast<int>(ScalarOp::kAdd), 1);
  Emit(Opcode::kGoto, -1, head - Here());
  PatchJumpC(exit_branch);
  for (int k = 0; k < num_states; ++k) {
    reg_of_[node.output(k)] = states[k];
    if (node.output(k)->type().is_tensor()) {
      BindSymbolsFrom(node.output(k)->tensor_type(), states[k]);
    }
  }
  for (int k = 0; k < num_scan_outputs; ++k) {
    const Value* out = node.output(num_states + k);
    if (out_axis[k] == 0) continue;
    reg_of_[out] = transpose(stacked[k], front_perm(out->tensor_type().rank(), out_axis[k], true),
                             out->tensor_type().dtype);
  }
  return absl::OkStatus();
}

// Loop(M, cond, v_initial...) with body(iteration_num, cond_in, v_in...) ->
// (cond_out, v_out..., scan_outputs...). Emitted as
//   i = 0; cond = cond_initial (or true); v = v_initial
//   head: if !(i < M) goto exit; if !cond goto exit
//         body ... ; v = v_out; cond = cond_out; i += 1; goto head
//   exit: outputs = v
absl::Status FunctionEmitter::EmitLoop(const Node& node) {
  const Graph* body = node.subgraphs().count("body") ? node.subgraphs().at("body").get() : nullptr;
  if (body == nullptr) return absl::InvalidArgumentError("Loop needs a body");
  const int num_carried = node.num_inputs() - 2;
  if (num_carried < 0 || static_cast<int>(body->inputs().size()) != num_carried + 2 ||
      static_cast<int>(body->outputs().size()) < num_carried + 1) {
    return absl::InvalidArgumentError("Loop body inputs/outputs do not match the node");
  }
  const int num_scan = static_cast<int>(body->outputs().size()) - num_carried - 1;
  // Scan outputs go straight into a [trip, ...] buffer when the trip count and the per-step
  // shape are known before the loop; otherwise each step is appended to a sequence and the
  // sequence stacked after it (ConcatFromSequence with a new axis).
  bool scan_via_sequence = num_scan > 0 && node.input(0) == nullptr;
  for (int k = 0; k < num_scan; ++k) {
    const Value* step = body->outputs()[1 + num_carried + k];
    if (!step->type().is_tensor() || !TypeBound(step->tensor_type())) scan_via_sequence = true;
  }
  // Trip count (absent: unbounded) and condition (absent: true).
  int trip = -1;
  if (node.input(0) != nullptr) {
    NIMBLE_ASSIGN_OR_RETURN(int m, Materialize(node.input(0)));
    trip = NewReg();
    Emit(Opcode::kTensorElement, trip, m, 0);
  }
  int cond = -1;
  if (node.input(1) != nullptr) {
    NIMBLE_ASSIGN_OR_RETURN(int c, Materialize(node.input(1)));
    cond = NewReg();
    Emit(Opcode::kMove, cond, c);
  }
  const int counter = NewReg();
  Emit(Opcode::kLoadConsti, counter, -1, -1, -1, 0);
  std::vector<int> carried;
  for (int k = 0; k < num_carried; ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int v, Materialize(node.input(2 + k)));
    carried.push_back(NewReg());
    Emit(Opcode::kMove, carried.back(), v);
  }
  // Scan outputs: room for `trip` steps, filled row by row, viewed at the steps taken.
  struct ScanOutput {
    int storage = -1, full = -1;
    std::vector<int64_t> step_dims;
    vm::DType dtype = vm::DType::kInvalid;
  };
  std::vector<ScanOutput> scans;
  std::vector<int> step_seqs;
  int stack_kernel = -1;
  if (scan_via_sequence) {
    for (int k = 0; k < num_scan; ++k) {
      step_seqs.push_back(NewReg());
      Emit(Opcode::kAllocADT, step_seqs.back(), vm::kSequenceTag, -1, -1, 0, {});
    }
    vm::Attributes stack_attrs;
    stack_attrs.Set("axis", int64_t{0});
    stack_attrs.Set("new_axis", int64_t{1});
    exe_.kernels.push_back(vm::KernelEntry{"ConcatFromSequence", vm::kCpu, stack_attrs});
    stack_kernel = static_cast<int>(exe_.kernels.size()) - 1;
  }
  for (int k = 0; k < num_scan && !scan_via_sequence; ++k) {
    const Value* step = body->outputs()[1 + num_carried + k];
    ScanOutput scan;
    scan.dtype = step->tensor_type().dtype;
    NIMBLE_ASSIGN_OR_RETURN(scan.step_dims, EmitDims(step->tensor_type()));
    NIMBLE_ASSIGN_OR_RETURN(int elems, EmitDim(*step->tensor_type().NumElements()));
    const int step_bytes = NewReg(), bytes = NewReg();
    Emit(Opcode::kScalarBinaryImm, step_bytes, elems, -1, static_cast<int>(ScalarOp::kMul),
         static_cast<int64_t>(vm::DTypeSize(scan.dtype)));
    Emit(Opcode::kScalarBinary, bytes, step_bytes, trip, static_cast<int>(ScalarOp::kMul));
    scan.storage = NewReg();
    Emit(Opcode::kAllocStorage, scan.storage, bytes, 0, MemoryPlan::kAlignment);
    NIMBLE_ASSIGN_OR_RETURN(int zero, EmitDim(DimExpr::Const(0)));
    std::vector<int64_t> full_dims = {trip};
    full_dims.insert(full_dims.end(), scan.step_dims.begin(), scan.step_dims.end());
    scan.full = NewReg();
    Emit(Opcode::kAllocTensorReg, scan.full, scan.storage, zero, static_cast<int>(scan.dtype), 0,
         full_dims);
    scans.push_back(std::move(scan));
  }
  int identity = -1;
  if (num_scan > 0 && !scan_via_sequence) {
    exe_.kernels.push_back(vm::KernelEntry{"Identity", vm::kCpu, {}});
    identity = static_cast<int>(exe_.kernels.size()) - 1;
  }
  const int head = Here();
  std::vector<int> exits;
  if (trip >= 0) {
    const int in_range = NewReg();
    Emit(Opcode::kScalarBinary, in_range, counter, trip, static_cast<int>(ScalarOp::kLt));
    exits.push_back(Here());
    Emit(Opcode::kIf, -1, in_range, 1, 0);
  }
  if (cond >= 0) {
    exits.push_back(Here());
    Emit(Opcode::kIf, -1, cond, 1, 0);
  }
  Scope scope = SaveScope();
  // Body inputs: the iteration number as an i64 scalar tensor, the condition, the carried
  // values. Shapes of carried values may change between iterations: rebind their symbols.
  const int iter_vec = NewReg();
  Emit(Opcode::kMakeShapeTensor, iter_vec, -1, -1, -1, 0, {counter});
  const int iter = NewReg();
  Emit(Opcode::kReshapeTensor, iter, iter_vec);
  reg_of_[body->inputs()[0]] = iter;
  if (cond >= 0) {
    reg_of_[body->inputs()[1]] = cond;
  } else {
    // No condition input: the body still receives one (true).
    NIMBLE_ASSIGN_OR_RETURN(vm::Tensor t, vm::Tensor::Empty(vm::DType::kBool, {}));
    *t.data<bool>() = true;
    const int r = NewReg();
    Emit(Opcode::kLoadConst, r, AddConstant(t));
    reg_of_[body->inputs()[1]] = r;
  }
  for (int k = 0; k < num_carried; ++k) {
    reg_of_[body->inputs()[2 + k]] = carried[k];
    RebindSymbols(body->inputs()[2 + k], carried[k]);
  }
  NIMBLE_RETURN_IF_ERROR(EmitSubgraph(*body));
  for (int k = 0; k < num_scan && scan_via_sequence; ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int step, Materialize(body->outputs()[1 + num_carried + k]));
    Emit(Opcode::kAdtInsert, step_seqs[k], step_seqs[k], step, AddString(node.Describe()), 0, {});
  }
  for (int k = 0; k < num_scan && !scan_via_sequence; ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int step, Materialize(body->outputs()[1 + num_carried + k]));
    const int slot = NewReg();
    Emit(Opcode::kTensorSelect, slot, scans[k].full, counter);
    Emit(Opcode::kInvokePacked, -1, identity, 1, 0, 0, {step, slot});
  }
  // Parallel move of the new carried values (v_out[j] may be some v_in[k]).
  std::vector<int> next;
  for (int k = 0; k < num_carried; ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int r, Materialize(body->outputs()[1 + k]));
    const int tmp = NewReg();
    Emit(Opcode::kMove, tmp, r);
    next.push_back(tmp);
  }
  NIMBLE_ASSIGN_OR_RETURN(int cond_out, Materialize(body->outputs()[0]));
  for (int k = 0; k < num_carried; ++k) Emit(Opcode::kMove, carried[k], next[k]);
  // Without a condition input the loop is a plain for loop: cond_out is ignored (ONNX).
  if (cond >= 0) Emit(Opcode::kMove, cond, cond_out);
  RestoreScope(std::move(scope));
  Emit(Opcode::kScalarBinaryImm, counter, counter, -1, static_cast<int>(ScalarOp::kAdd), 1);
  Emit(Opcode::kGoto, -1, head - Here());
  for (int at : exits) PatchJumpC(at);
  for (int k = 0; k < num_carried; ++k) {
    reg_of_[node.output(k)] = carried[k];
    if (node.output(k)->type().is_tensor()) {
      BindSymbolsFrom(node.output(k)->tensor_type(), carried[k]);
    }
  }
  for (int k = 0; k < num_scan && scan_via_sequence; ++k) {
    const Value* out = node.output(num_carried + k);
    const int r = NewReg();
    Emit(Opcode::kInvokePacked, -1, stack_kernel, 1,
         vm::kInvokePackedSequenceInputs | vm::kInvokePackedShapeFunction,
         vm::EncodeOutputDTypes({out->tensor_type().dtype}), {step_seqs[k], r});
    reg_of_[out] = r;
    BindSymbolsFrom(out->tensor_type(), r);
  }
  for (int k = 0; k < num_scan && !scan_via_sequence; ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int zero, EmitDim(DimExpr::Const(0)));
    std::vector<int64_t> taken_dims = {counter};
    taken_dims.insert(taken_dims.end(), scans[k].step_dims.begin(), scans[k].step_dims.end());
    const int r = NewReg();
    Emit(Opcode::kAllocTensorReg, r, scans[k].storage, zero, static_cast<int>(scans[k].dtype), 0,
         taken_dims);
    const Value* out = node.output(num_carried + k);
    reg_of_[out] = r;
    BindSymbolsFrom(out->tensor_type(), r);
  }
  return absl::OkStatus();
}

// ---- Sequences and optionals ------------------------------------------------------------------
// A sequence is an ADT of vm::kSequenceTag whose fields are tensors; an optional an ADT of
// vm::kOptionalTag with no field (none) or one. Tensors stored into them are never arena
// buffers (Analyse marks them as escaping), so elements stay valid for the sequence's life.

absl::StatusOr<int> FunctionEmitter::ScalarOf(const Value* v) {
  if (IsShapeValue(v) && v->symbolic_value()->size() == 1)
    return EmitDim((*v->symbolic_value())[0]);
  NIMBLE_ASSIGN_OR_RETURN(int t, Materialize(v));
  const int r = NewReg();
  Emit(Opcode::kTensorElement, r, t, 0);
  return r;
}

absl::Status FunctionEmitter::EmitSequenceOp(const Node& node) {
  const std::string& op = node.op_type();
  const Value* out = node.output(0);
  auto input_reg = [&](int i) { return Materialize(node.input(i)); };
  auto bind_output = [&](int r) {
    reg_of_[out] = r;
    if (out->type().is_tensor()) BindSymbolsFrom(out->tensor_type(), r);
    return absl::OkStatus();
  };
  if (op == "Identity") {
    NIMBLE_ASSIGN_OR_RETURN(int r, input_reg(0));
    return bind_output(r);
  }
  if (op == "SequenceEmpty" || op == "SequenceConstruct") {
    std::vector<int64_t> fields;
    for (int i = 0; i < node.num_inputs(); ++i) {
      NIMBLE_ASSIGN_OR_RETURN(int r, input_reg(i));
      fields.push_back(r);
    }
    const int r = NewReg();
    Emit(Opcode::kAllocADT, r, vm::kSequenceTag, -1, -1, 0, fields);
    return bind_output(r);
  }
  if (op == "SequenceAt") {
    NIMBLE_ASSIGN_OR_RETURN(int seq, input_reg(0));
    NIMBLE_ASSIGN_OR_RETURN(int position, ScalarOf(node.input(1)));
    const int r = NewReg();
    Emit(Opcode::kGetFieldReg, r, seq, position, AddString(node.Describe()));
    return bind_output(r);
  }
  if (op == "SequenceInsert" || op == "SequenceErase") {
    NIMBLE_ASSIGN_OR_RETURN(int seq, input_reg(0));
    const int position_input = op == "SequenceInsert" ? 2 : 1;
    std::vector<int64_t> position;
    if (node.input(position_input) != nullptr) {
      NIMBLE_ASSIGN_OR_RETURN(int p, ScalarOf(node.input(position_input)));
      position.push_back(p);
    }
    const int r = NewReg();
    if (op == "SequenceInsert") {
      NIMBLE_ASSIGN_OR_RETURN(int value, input_reg(1));
      Emit(Opcode::kAdtInsert, r, seq, value, AddString(node.Describe()), 0, position);
    } else {
      Emit(Opcode::kAdtErase, r, seq, -1, AddString(node.Describe()), 0, position);
    }
    return bind_output(r);
  }
  if (op == "SequenceLength") {
    NIMBLE_ASSIGN_OR_RETURN(int seq, input_reg(0));
    const int n = NewReg(), r = NewReg();
    Emit(Opcode::kAdtSize, n, seq);
    Emit(Opcode::kMakeScalarTensor, r, n, -1, static_cast<int>(vm::DType::kI64));
    return bind_output(r);
  }
  if (op == "Optional") {
    std::vector<int64_t> fields;
    if (node.input(0) != nullptr) {
      NIMBLE_ASSIGN_OR_RETURN(int r, input_reg(0));
      fields.push_back(r);
    }
    const int r = NewReg();
    Emit(Opcode::kAllocADT, r, vm::kOptionalTag, -1, -1, 0, fields);
    return bind_output(r);
  }
  if (op == "OptionalHasElement") {
    const Value* in = node.input(0);
    int present = -1;
    if (in == nullptr || in->type().kind != Type::Kind::kOptional) {
      present = NewReg();  // absent input: false; a plain tensor or sequence: true
      Emit(Opcode::kLoadConsti, present, -1, -1, -1, in == nullptr ? 0 : 1);
    } else {
      NIMBLE_ASSIGN_OR_RETURN(int opt, input_reg(0));
      present = NewReg();
      Emit(Opcode::kOptionalHas, present, opt);
    }
    const int r = NewReg();
    Emit(Opcode::kMakeScalarTensor, r, present, -1, static_cast<int>(vm::DType::kBool));
    return bind_output(r);
  }
  if (op == "OptionalGetElement") {
    NIMBLE_ASSIGN_OR_RETURN(int in, input_reg(0));
    if (node.input(0)->type().kind != Type::Kind::kOptional) return bind_output(in);
    const int r = NewReg();
    Emit(Opcode::kOptionalGet, r, in, -1, AddString(node.Describe()));
    return bind_output(r);
  }
  if (op == "SplitToSequence" || op == "ConcatFromSequence") {
    std::vector<int64_t> args;
    for (int i = 0; i < node.num_inputs(); ++i) {
      NIMBLE_ASSIGN_OR_RETURN(int r, input_reg(i));
      args.push_back(r);
    }
    NIMBLE_ASSIGN_OR_RETURN(int kernel, KernelIndex(node));
    const int r = NewReg();
    args.push_back(r);
    if (op == "SplitToSequence") {
      Emit(Opcode::kInvokePacked, -1, kernel, node.num_inputs(), vm::kInvokePackedSequenceOutput, 0,
           args);
    } else {
      const vm::DType dtype = out->tensor_type().dtype;
      Emit(Opcode::kInvokePacked, -1, kernel, node.num_inputs(),
           vm::kInvokePackedSequenceInputs | vm::kInvokePackedShapeFunction,
           vm::EncodeOutputDTypes({dtype}), args);
      ++report_.num_runtime_shape_calls;
    }
    ++report_.num_kernel_calls;
    return bind_output(r);
  }
  if (op == "SequenceMap") return EmitSequenceMap(node);
  return absl::UnimplementedError(absl::StrCat(op, " on sequences is not lowered"));
}

// SequenceMap(seq0, extra...) with body(elem0, extra_elems...) -> (outs...):
//   n = size(seq0); outs = [] ...; i = 0
//   head: if !(i < n) goto exit
//         elem_k = input_k[i] (sequences) or input_k (tensors); body
//         outs_j = append(outs_j, body_out_j); i += 1; goto head
absl::Status FunctionEmitter::EmitSequenceMap(const Node& node) {
  const Graph* body = node.subgraphs().count("body") ? node.subgraphs().at("body").get() : nullptr;
  if (body == nullptr) return absl::InvalidArgumentError("SequenceMap needs a body");
  if (static_cast<int>(body->inputs().size()) != node.num_inputs() ||
      static_cast<int>(body->outputs().size()) != node.num_outputs()) {
    return absl::InvalidArgumentError("SequenceMap body inputs/outputs do not match the node");
  }
  std::vector<int> ins;
  for (int k = 0; k < node.num_inputs(); ++k) {
    NIMBLE_ASSIGN_OR_RETURN(int r, Materialize(node.input(k)));
    ins.push_back(r);
  }
  const int n = NewReg();
  Emit(Opcode::kAdtSize, n, ins[0]);
  // Further sequence inputs must have the same length.
  for (int k = 1; k < node.num_inputs(); ++k) {
    if (node.input(k)->type().kind != Type::Kind::kSequence) continue;
    const int m = NewReg(), ok = NewReg();
    Emit(Opcode::kAdtSize, m, ins[k]);
    Emit(Opcode::kScalarBinary, ok, n, m, static_cast<int>(ScalarOp::kEq));
    Emit(Opcode::kAssert, -1, ok,
         AddString(absl::StrCat(node.Describe(), ": input sequences have lengths {} and {}")), -1,
         0, {n, m});
  }
  std::vector<int> outs;
  for (int j = 0; j < node.num_outputs(); ++j) {
    outs.push_back(NewReg());
    Emit(Opcode::kAllocADT, outs.back(), vm::kSequenceTag, -1, -1, 0, {});
  }
  const int counter = NewReg();
  Emit(Opcode::kLoadConsti, counter, -1, -1, -1, 0);
  const int head = Here();
  const int in_range = NewReg();
  Emit(Opcode::kScalarBinary, in_range, counter, n, static_cast<int>(ScalarOp::kLt));
  const int exit = Here();
  Emit(Opcode::kIf, -1, in_range, 1, 0);
  Scope scope = SaveScope();
  const int where = AddString(node.Describe());
  for (int k = 0; k < node.num_inputs(); ++k) {
    const Value* param = body->inputs()[k];
    int r = ins[k];
    if (node.input(k)->type().kind == Type::Kind::kSequence) {
      r = NewReg();
      Emit(Opcode::kGetFieldReg, r, ins[k], counter, where);
    }
    reg_of_[param] = r;
    RebindSymbols(param, r);
  }
  NIMBLE_RETURN_IF_ERROR(EmitSubgraph(*body));
  for (int j = 0; j < node.num_outputs(); ++j) {
    NIMBLE_ASSIGN_OR_RETURN(int r, Materialize(body->outputs()[j]));
    Emit(Opcode::kAdtInsert, outs[j], outs[j], r, where, 0, {});
  }
  RestoreScope(std::move(scope));
  Emit(Opcode::kScalarBinaryImm, counter, counter, -1, static_cast<int>(ScalarOp::kAdd), 1);
  Emit(Opcode::kGoto, -1, head - Here());
  PatchJumpC(exit);
  for (int j = 0; j < node.num_outputs(); ++j) reg_of_[node.output(j)] = outs[j];
  return absl::OkStatus();
}

absl::StatusOr<int> FunctionEmitter::Run(CodegenReport* report) {
  Graph& g = *module_.main;
  fn_.name = options_.function_name;
  fn_.num_params = static_cast<int32_t>(g.inputs().size());
  fn_.num_registers = fn_.num_params;

  // Signature and symbol bindings from the inputs.
  std::vector<std::pair<int, int>> deferred_checks;  // (input, axis) with expression dims
  for (int i = 0; i < static_cast<int>(g.inputs().size()); ++i) {
    const Value* in = g.inputs()[i];
    reg_of_[in] = i;
    const TensorType& t = in->tensor_type();
    vm::TensorSignature sig;
    sig.name = in->name();
    sig.kind = KindOfType(in->type());
    sig.dtype = t.dtype;
    if (!in->type().is_tensor()) {
      // Sequences and optionals: element dims for the record; the VM checks the dtype.
      if (t.dims) {
        for (const Dim& d : *t.dims) {
          sig.dims.push_back(d && d->IsConst() ? d->ConstValue() : -1);
          sig.dim_names.push_back("");
        }
      }
      if (options_.define_signature) exe_.inputs.push_back(std::move(sig));
      continue;
    }
    if (!t.has_rank()) {
      return absl::UnimplementedError(
          absl::StrCat("input '", in->name(), "' must be a tensor of known rank"));
    }
    for (int axis = 0; axis < t.rank(); ++axis) {
      const Dim& d = (*t.dims)[axis];
      if (d && d->IsConst()) {
        sig.dims.push_back(d->ConstValue());
        sig.dim_names.push_back("");
        continue;
      }
      sig.dims.push_back(-1);
      auto atom = d ? d->AsAtom() : std::nullopt;
      if (atom && dims_.atom(*atom).kind == DimContext::AtomKind::kSymbol) {
        sig.dim_names.push_back(dims_.atom(*atom).name);
        if (!bound_.contains(*atom)) {
          if (options_.define_signature) {
            exe_.symbol_bindings.push_back({dims_.atom(*atom).name, i, axis});
          }
          const int r = NewReg();
          Emit(Opcode::kTensorDim, r, i, axis);
          bound_.insert(*atom);
          symbol_reg_[*atom] = r;
          dim_reg_[*d] = r;
        }
      } else {
        sig.dim_names.push_back("");
        if (d) deferred_checks.emplace_back(i, axis);
      }
    }
    if (options_.define_signature) exe_.inputs.push_back(std::move(sig));
  }
  // Input dims given as expressions of other symbols ("seq + 1") are checked at run time.
  for (auto [i, axis] : deferred_checks) {
    const DimExpr& e = *(*g.inputs()[i]->tensor_type().dims)[axis];
    if (!AtomsBound(e)) continue;
    const int actual = NewReg();
    Emit(Opcode::kTensorDim, actual, i, axis);
    NIMBLE_ASSIGN_OR_RETURN(int expected, EmitDim(e));
    const int ok = NewReg();
    Emit(Opcode::kScalarBinary, ok, actual, expected, static_cast<int>(ScalarOp::kEq));
    Emit(Opcode::kAssert, -1, ok,
         AddString(absl::StrCat("input '", g.inputs()[i]->name(), "': dim ", axis,
                                " is {} but must be ", dims_.ToString(e), " = {}")),
         -1, 0, {actual, expected});
  }

  const absl::flat_hash_set<int32_t> input_symbols = bound_;
  NIMBLE_RETURN_IF_ERROR(Analyse());
  bound_ = input_symbols;

  // Memory plan over the buffers whose sizes are known at entry.
  for (const auto& [root, last_use] : last_use_) {
    if (escapes_.contains(root) || vm_allocated_.contains(root) || root->producer() == nullptr ||
        !root->type().is_tensor()) {
      continue;
    }
    const TensorType& t = root->tensor_type();
    if (!TypeBound(t)) continue;
    BufferRequest request;
    request.bytes = *t.NumElements() * DimExpr::Const(static_cast<int64_t>(vm::DTypeSize(t.dtype)));
    const auto& nodes = g.nodes();
    request.def =
        static_cast<int>(std::find_if(nodes.begin(), nodes.end(),
                                      [&](const auto& n) { return n.get() == root->producer(); }) -
                         nodes.begin());
    request.last_use = std::max(last_use, request.def);
    planned_[root] = static_cast<int>(requests_.size());
    auto placed = node_device_.find(root->producer());
    request_device_.push_back(placed == node_device_.end() ? 0 : placed->second);
    requests_.push_back(request);
  }
  report_.num_planned_buffers = static_cast<int>(requests_.size());
  report_.arena_bytes = DimExpr::Const(0);
  report_.intermediate_bytes = DimExpr::Const(0);
  for (const BufferRequest& r : requests_)
    report_.intermediate_bytes = report_.intermediate_bytes + r.bytes;
  for (size_t i = 0; i < requests_.size(); ++i) {
    Arena& arena = arenas_[request_device_[i]];
    arena.local[static_cast<int>(i)] = static_cast<int>(arena.requests.size());
    arena.requests.push_back(static_cast<int>(i));
  }
  for (auto& [device, arena] : arenas_) {
    std::vector<BufferRequest> local;
    for (int i : arena.requests) local.push_back(requests_[i]);
    arena.plan = PlanMemory(local, dims_);
    report_.arena_bytes = report_.arena_bytes + arena.plan.total_bytes;
    NIMBLE_ASSIGN_OR_RETURN(int size, EmitDim(arena.plan.total_bytes));
    arena.reg = NewReg();
    Emit(Opcode::kAllocStorage, arena.reg, size, device, MemoryPlan::kAlignment);
    for (const DimExpr& offset : arena.plan.slot_offset) {
      NIMBLE_ASSIGN_OR_RETURN(int r, EmitDim(offset));
      arena.slot_offset_reg.push_back(r);
    }
  }

  // A result computed on a device leaves for the host as soon as it is computed: a device_copy
  // with imm 1 (nothing on the host reads it before the function returns), which the VM queues
  // so that it overlaps the compute after it (on a branch of a device graph; eagerly, at ret).
  // Host readers of the same value make their own, ordinary copy.
  const absl::flat_hash_set<const Value*> results(g.outputs().begin(), g.outputs().end());
  absl::flat_hash_map<const Value*, int> result_copies;
  const auto& nodes = g.nodes();
  // The inputs that device kernels read go to the device first, in the order of their first
  // readers, before any kernel: a copy then leads the device's work instead of sitting between
  // two kernels, where (in a CUDA graph) its node's latency adds to the critical path. On the
  // H100, BERT's attention mask was copied between the first QKV GEMM and the first attention.
  // (HoistInputCopies: off by default.)
  if (HoistInputCopies()) {
    const absl::flat_hash_set<const Value*> params(g.inputs().begin(), g.inputs().end());
    for (size_t i = 0; i < nodes.size(); ++i) {
      const auto placed = node_device_.find(nodes[i].get());
      if (kind_[i] != NodeKind::kCompute || placed == node_device_.end() || placed->second == 0) {
        continue;
      }
      const std::vector<int> host_inputs = HostInputs(*nodes[i]);
      for (int j = 0; j < nodes[i]->num_inputs(); ++j) {
        const Value* in = nodes[i]->input(j);
        if (in == nullptr ||
            std::find(host_inputs.begin(), host_inputs.end(), j) != host_inputs.end()) {
          continue;
        }
        // The input itself, or the input a view (reshape) of it comes from.
        const auto root = root_.find(in);
        const Value* param = root != root_.end() ? root->second : in;
        if (!params.contains(param) || !param->type().is_tensor()) continue;
        NIMBLE_RETURN_IF_ERROR(MaterializeOn(param, placed->second).status());
      }
    }
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    absl::Status status = EmitNode(static_cast<int>(i), *nodes[i], kind_[i]);
    if (!status.ok()) return Annotate(status, nodes[i]->Describe());
    for (const Value* out : nodes[i]->outputs()) {
      if (!results.contains(out) || result_copies.contains(out) || !reg_of_.contains(out)) {
        continue;
      }
      NIMBLE_ASSIGN_OR_RETURN(auto home, MaterializeHome(out));
      if (home.second == 0) continue;
      const int r = NewReg();
      Emit(Opcode::kDeviceCopy, r, home.first, home.second, 0, /*imm=*/vm::kDeviceCopyResult);
      ++report_.num_device_copies;
      result_copies[out] = r;
    }
  }

  // Outputs: one tensor, or a tuple (ADT tag 0) of them.
  std::vector<int64_t> outs;
  for (const Value* out : g.outputs()) {
    auto early = result_copies.find(out);
    int r = 0;
    if (early != result_copies.end()) {
      r = early->second;
    } else {
      NIMBLE_ASSIGN_OR_RETURN(r, MaterializeOn(out, 0));  // outputs leave on the host
    }
    outs.push_back(r);
    const TensorType& t = out->tensor_type();
    vm::TensorSignature sig;
    sig.name = out->name();
    sig.kind = KindOfType(out->type());
    sig.dtype = t.dtype;
    if (t.dims) {
      for (const Dim& d : *t.dims) {
        sig.dims.push_back(d && d->IsConst() ? d->ConstValue() : -1);
        auto atom = d ? d->AsAtom() : std::nullopt;
        sig.dim_names.push_back(atom && dims_.atom(*atom).kind == DimContext::AtomKind::kSymbol
                                    ? dims_.atom(*atom).name
                                    : "");
      }
    }
    if (options_.define_signature) exe_.outputs.push_back(std::move(sig));
  }
  const int result = NewReg();
  Emit(Opcode::kAllocADT, result, 0, -1, -1, 0, outs);
  Emit(Opcode::kRet, -1, result);

  exe_.functions.push_back(std::move(fn_));
  if (report) *report = report_;
  return static_cast<int>(exe_.functions.size()) - 1;
}

}  // namespace

absl::StatusOr<int> EmitMainFunction(Module& module, vm::Executable& executable,
                                     CodegenReport* report, const EmitOptions& options) {
  FunctionEmitter emitter(module, executable, options);
  return emitter.Run(report);
}

}  // namespace nimble::compiler
