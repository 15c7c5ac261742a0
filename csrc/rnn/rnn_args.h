// Host-side argument handling of the LSTM/GRU layer ops, shared by the CPU and CUDA entry points:
// shape/dtype/device checks (every index a kernel forms stays inside its tensor), the step
// structure of a (possibly variable-length) batch, and the row index maps built from it.
//
// Layout. A layer runs on rows in *step order*: step s has sizes[s] active batch rows (rows are
// sorted by length, longest first, so the active rows are always a prefix 0..sizes[s]-1) and its
// first row sits at offsets[s] of every [N, *] buffer. Packed layout (a PackedSequence's data):
// offsets are the running sums of sizes and N = sum(sizes). Padded layout (time-major [L, B, *]
// flattened): offsets[s] = s * B, N = L * B, and rows at or past a batch row's length are padding.
// The forward direction runs steps in time order, so step order is the data's own order; the
// reverse direction starts at each row's own end, so its step s of row b is time lengths[b]-1-s
// (a per-row reversal that reverse_rows() spells out as a row permutation).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/active_rows.h"
#include "common/checks.h"

namespace stseq {
namespace rnn {

enum class CellKind { kLstm, kGru };

inline int64_t gates_per_unit(CellKind kind) { return kind == CellKind::kLstm ? 4 : 3; }
inline const char* cell_name(CellKind kind) { return kind == CellKind::kLstm ? "lstm" : "gru"; }

// How the CUDA time loop runs: one GEMM and one pointwise kernel per step, or one persistent
// kernel for the whole sequence; "auto" picks. The CPU has one loop and ignores the choice.
enum class Algorithm { kAuto, kStepwise, kPersistent };

inline Algorithm parse_algorithm(std::string_view name) {
  if (name == "auto") return Algorithm::kAuto;
  if (name == "stepwise") return Algorithm::kStepwise;
  if (name == "persistent") return Algorithm::kPersistent;
  TORCH_CHECK_VALUE(false, "algorithm must be 'auto', 'stepwise' or 'persistent', got '",
                    std::string(name), "'");
}

struct Steps {
  int64_t batch = 0;             // B: rows of h0; rows at or past sizes[0] have no steps
  int64_t rows = 0;              // N: rows of every [N, *] buffer
  bool padded = false;
  std::vector<int64_t> sizes;    // [S] active rows per step, non-increasing
  std::vector<int64_t> offsets;  // [S] first row of each step
  std::vector<int64_t> lengths;  // [B] steps of each batch row

  int64_t num_steps() const { return static_cast<int64_t>(sizes.size()); }
  int64_t active_rows() const { return sizes.empty() ? 0 : sizes[0]; }
  // Every step has all B rows: the layout is a plain [S, B] grid with no padding.
  bool uniform() const {
    for (int64_t n : sizes) {
      if (n != batch) return false;
    }
    return true;
  }
  // Padded layout with padding rows: buffers the kernels do not fully write start zeroed.
  bool has_padding() const { return padded && !uniform(); }
};

inline Steps make_steps(const at::Tensor& batch_sizes, bool padded, int64_t batch, int64_t rows) {
  TORCH_CHECK_VALUE(batch_sizes.dim() == 1, "batch_sizes must have shape [L], got ",
                    batch_sizes.sizes());
  TORCH_CHECK_VALUE(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong,
                    "batch_sizes must be an int64 CPU tensor (as in a PackedSequence), got ",
                    batch_sizes.scalar_type(), " on ", batch_sizes.device());
  Steps steps;
  steps.batch = batch;
  steps.rows = rows;
  steps.padded = padded;
  const at::Tensor sizes = batch_sizes.contiguous();
  const int64_t* n = sizes.data_ptr<int64_t>();
  const int64_t num_steps = sizes.numel();
  steps.sizes.assign(n, n + num_steps);
  steps.offsets.resize(num_steps);
  int64_t offset = 0;
  for (int64_t s = 0; s < num_steps; ++s) {
    TORCH_CHECK_VALUE(n[s] >= 0 && n[s] <= batch, "batch_sizes[", s, "] = ", n[s],
                      " is outside [0, B=", batch, "] (B = rows of h0)");
    TORCH_CHECK_VALUE(s == 0 || n[s] <= n[s - 1], "batch_sizes must be non-increasing (rows "
                      "sorted by length, longest first); batch_sizes[", s, "] = ", n[s],
                      " > batch_sizes[", s - 1, "] = ", n[s - 1]);
    steps.offsets[s] = padded ? s * batch : offset;
    offset += n[s];
  }
  const int64_t expected = padded ? num_steps * batch : offset;
  TORCH_CHECK_VALUE(rows == expected, "input has ", rows, " rows but batch_sizes describe ",
                    expected, padded ? " (L * B, padded layout)" : " (their sum, packed layout)");
  steps.lengths = row_lengths(steps.sizes, batch);
  return steps;
}

// [N] int64: the data row (time order) that step-order row i of the reverse direction reads and
// writes. A per-row reversal, so it is its own inverse; padding rows map to themselves.
inline at::Tensor reverse_rows(const Steps& steps) {
  at::Tensor index = at::empty({steps.rows}, at::kLong);
  int64_t* out = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < steps.rows; ++i) out[i] = i;
  for (int64_t s = 0; s < steps.num_steps(); ++s) {
    for (int64_t b = 0; b < steps.sizes[s]; ++b) {
      out[steps.offsets[s] + b] = steps.offsets[steps.lengths[b] - 1 - s] + b;
    }
  }
  return index;
}

// [sizes[0]] int64: the step-order row of each batch row's last step (where h_n is read).
inline at::Tensor last_rows(const Steps& steps) {
  at::Tensor index = at::empty({steps.active_rows()}, at::kLong);
  int64_t* out = index.data_ptr<int64_t>();
  for (int64_t b = 0; b < steps.active_rows(); ++b) {
    out[b] = steps.offsets[steps.lengths[b] - 1] + b;
  }
  return index;
}

// [N] int64: for each step-order row, its previous step's row in [h0 (B rows); hidden (N rows)]
// (row b of h0 at a row's first step). Used by packed variable-length batches, whose steps are
// not a fixed stride apart.
inline at::Tensor previous_rows(const Steps& steps) {
  at::Tensor index = at::zeros({steps.rows}, at::kLong);
  int64_t* out = index.data_ptr<int64_t>();
  for (int64_t s = 0; s < steps.num_steps(); ++s) {
    for (int64_t b = 0; b < steps.sizes[s]; ++b) {
      out[steps.offsets[s] + b] = s == 0 ? b : steps.batch + steps.offsets[s - 1] + b;
    }
  }
  return index;
}

// Sizes of one layer and direction.
struct LayerShape {
  CellKind kind;
  int64_t input_size;  // I
  int64_t hidden;      // H
  int64_t proj;        // P: size of h (H without a projection)
  int64_t gates;       // G = 4H (LSTM) or 3H (GRU)
  int64_t batch;       // B
  int64_t rows;        // N
  bool has_proj;
};

inline void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name,
                        const char* shape) {
  TORCH_CHECK_VALUE(t.sizes() == expected, name, " must have shape ", shape, " = ", expected,
                    ", got ", t.sizes());
}

inline void check_like(const at::Tensor& t, const at::Tensor& input, const char* name) {
  check_same_device(t, input, name, "input");
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type(), name, " must have the dtype of input (",
                    input.scalar_type(), "), got ", t.scalar_type());
}

// Checks the tensors of one layer call; c0 and weight_hr only for the LSTM.
inline LayerShape check_layer(CellKind kind, const at::Tensor& input, const at::Tensor& h0,
                              const at::Tensor* c0, const at::Tensor& weight_ih,
                              const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                              const std::optional<at::Tensor>& bias_hh,
                              const std::optional<at::Tensor>& weight_hr) {
  check_rank(input, 2, "input", "[N, I] (rows in step order)");
  TORCH_CHECK_VALUE(at::isFloatingType(input.scalar_type()),
                    "input must be a floating-point tensor, got ", input.scalar_type());
  check_rank(weight_ih, 2, "weight_ih", "[G, I]");
  const int64_t q = gates_per_unit(kind);
  LayerShape shape{};
  shape.kind = kind;
  shape.rows = input.size(0);
  shape.input_size = input.size(1);
  shape.gates = weight_ih.size(0);
  TORCH_CHECK_VALUE(shape.gates % q == 0 && shape.gates > 0, "weight_ih must have ", q,
                    " * hidden_size rows, got ", shape.gates);
  shape.hidden = shape.gates / q;
  shape.has_proj = weight_hr.has_value();
  TORCH_CHECK_VALUE(!(shape.has_proj && kind == CellKind::kGru), "weight_hr is LSTM-only");
  if (shape.has_proj) check_rank(*weight_hr, 2, "weight_hr", "[P, H]");
  shape.proj = shape.has_proj ? weight_hr->size(0) : shape.hidden;
  check_rank(h0, 2, "h0", "[B, P]");
  shape.batch = h0.size(0);
  check_shape(weight_ih, {shape.gates, shape.input_size}, "weight_ih", "[G, I]");
  check_shape(weight_hh, {shape.gates, shape.proj}, "weight_hh", "[G, P]");
  check_shape(h0, {shape.batch, shape.proj}, "h0", "[B, P]");
  check_like(h0, input, "h0");
  check_like(weight_ih, input, "weight_ih");
  check_like(weight_hh, input, "weight_hh");
  if (c0 != nullptr) {
    check_shape(*c0, {shape.batch, shape.hidden}, "c0", "[B, H]");
    check_like(*c0, input, "c0");
  }
  TORCH_CHECK_VALUE(bias_ih.has_value() == bias_hh.has_value(),
                    "bias_ih and bias_hh go together: pass both or neither");
  if (bias_ih.has_value()) {
    check_shape(*bias_ih, {shape.gates}, "bias_ih", "[G]");
    check_shape(*bias_hh, {shape.gates}, "bias_hh", "[G]");
    check_like(*bias_ih, input, "bias_ih");
    check_like(*bias_hh, input, "bias_hh");
  }
  if (shape.has_proj) {
    check_shape(*weight_hr, {shape.proj, shape.hidden}, "weight_hr", "[P, H]");
    check_like(*weight_hr, input, "weight_hr");
  }
  return shape;
}

// Saved activations: gates [N, 4H] and (LSTM) cells [N, H] in the accumulation dtype.
inline void check_saved(const LayerShape& shape, const at::Tensor& input, const at::Tensor& output,
                        const at::Tensor& gates, const at::Tensor* cells,
                        at::ScalarType activation_type) {
  check_shape(output, {shape.rows, shape.proj}, "output", "[N, P]");
  check_like(output, input, "output");
  check_shape(gates, {shape.rows, 4 * shape.hidden}, "gates",
              "[N, 4H] (the forward was run with keep_activations=True)");
  check_same_device(gates, input, "gates", "input");
  TORCH_CHECK_VALUE(gates.scalar_type() == activation_type, "gates must be ", activation_type,
                    ", got ", gates.scalar_type());
  if (cells != nullptr) {
    check_shape(*cells, {shape.rows, shape.hidden}, "cells", "[N, H]");
    check_same_device(*cells, input, "cells", "input");
    TORCH_CHECK_VALUE(cells->scalar_type() == activation_type, "cells must be ", activation_type,
                      ", got ", cells->scalar_type());
  }
}

// The incoming gradient `grad` of `name`, or zeros when autograd passed none (an unused output).
inline at::Tensor grad_or_zeros(const std::optional<at::Tensor>& grad, at::IntArrayRef shape,
                                const at::Tensor& like, const char* name) {
  if (!grad.has_value() || !grad->defined()) return at::zeros(shape, like.options());
  TORCH_CHECK_VALUE(grad->sizes() == shape, name, " must have shape ", shape, ", got ",
                    grad->sizes());
  check_same_device(*grad, like, name, "input");
  return grad->to(like.scalar_type()).contiguous();
}

}  // namespace rnn
}  // namespace stseq
