// The resizing convolution's depthwise taps on CPUs, and their adjoints (smpconv_models/ops/resize_cpu.py):
//
//   y[b, c, i, j] = sum_{m < ky, n < kx} bank[c, row_phase[i], m, col_phase[j], n]
//                                          * x[b, c, row_start[i] + m, col_start[j] + n]      (x = 0 outside)
//
// Layout: tap rows. The tap rows of an input plane, taps[h][j kx + n] = x[h][col_start[j] + n] (zero outside x),
// put the kx taps of every output column side by side, L = W' kx values per input row; the kernel rows of a row
// phase p, kernel[m][j kx + n] = bank[c, p, m, col_phase[j], n], have the same layout (they are the bank itself
// where every column has a phase of its own). Output row i is then the sum over m of element-wise products of
// the kernel's row m with the tap row row_start[i] + m, each column's kx-long segment summed: every pass is made
// of one contiguous loop, `multiply_add`, which the compiler vectorises, with no bounds checks (rows outside x
// are skipped, columns outside it are zeros of the tap rows).
//
// Parallel over channels, the batch looped inside: a channel's kernel rows are made once and stay in cache over
// the batch, no two threads write the same element (grad_input scatters within its channel's planes), and the
// batch is summed in one order (grad_bank): results do not depend on the number of threads.
// Accumulation in float for bfloat16 (at::opmath_type), in the input's dtype otherwise.

#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

using at::Tensor;

// multiply-adds per parallel task at least: fewer cost more to schedule than they save
constexpr int64_t kMinTaskWork = 1 << 16;

// The taps of one output along one axis: taps `first` to `last` (exclusive) of those from `start` on lie inside
// the input; `phase` picks its kernel.
struct OutputTaps {
  int64_t start, first, last, phase;
};

// One axis of the geometry: the taps of each output.
struct Axis {
  int64_t in_size, taps, phases;
  std::vector<OutputTaps> outputs;
  bool phase_per_output;  // output j has phase j (an arbitrary scale): the bank's columns are the kernel rows'

  int64_t out_size() const { return static_cast<int64_t>(outputs.size()); }
};

Axis make_axis(const Tensor& start, const Tensor& phase, int64_t in_size, int64_t taps, int64_t phases,
               const char* name) {
  TORCH_CHECK(start.dim() == 1 && phase.dim() == 1 && start.numel() == phase.numel(), "resize_cpu: ", name,
              "_start and ", name, "_phase must be 1-D of one length, got ", start.sizes(), " and ", phase.sizes());
  TORCH_CHECK(start.scalar_type() == at::kLong && phase.scalar_type() == at::kLong && start.is_cpu() &&
                  phase.is_cpu(),
              "resize_cpu: ", name, "_start and ", name, "_phase must be int64 CPU tensors");
  const Tensor starts = start.contiguous(), phases_of = phase.contiguous();
  const int64_t* s = starts.data_ptr<int64_t>();
  const int64_t* p = phases_of.data_ptr<int64_t>();
  Axis axis{in_size, taps, phases, std::vector<OutputTaps>(start.numel()), phases == start.numel()};
  for (int64_t i = 0; i < start.numel(); ++i) {
    axis.phase_per_output = axis.phase_per_output && p[i] == i;
    TORCH_CHECK(p[i] >= 0 && p[i] < phases, "resize_cpu: ", name, "_phase[", i, "] = ", p[i], " is not one of the ",
                phases, " phases of the bank");
    const int64_t first = std::clamp<int64_t>(-s[i], 0, taps);
    const int64_t last = std::clamp<int64_t>(in_size - s[i], first, taps);
    axis.outputs[i] = {s[i], first, last, p[i]};
  }
  return axis;
}

// out[t] += a[t] * b[t]: every pass's inner loop.
template <typename acc_t>
inline void multiply_add(const acc_t* __restrict a, const acc_t* __restrict b, acc_t* __restrict out, int64_t n) {
  for (int64_t t = 0; t < n; ++t) out[t] += a[t] * b[t];
}

// The tap rows [in_rows][W' kx] of one input plane [in_rows][cols.in_size].
template <typename scalar_t, typename acc_t>
void gather_tap_rows(const scalar_t* plane, int64_t in_rows, const Axis& cols, acc_t* taps) {
  const int64_t width = cols.out_size() * cols.taps;
  for (int64_t h = 0; h < in_rows; ++h) {
    const scalar_t* row = plane + h * cols.in_size;
    acc_t* out = taps + h * width;
    for (const OutputTaps& col : cols.outputs) {
      for (int64_t n = 0; n < cols.taps; ++n)
        out[n] = n >= col.first && n < col.last ? static_cast<acc_t>(row[col.start + n]) : acc_t(0);
      out += cols.taps;
    }
  }
}

// The adjoint of `gather_tap_rows`: plane [in_rows][cols.in_size] += the columns' taps, where they lie.
template <typename acc_t>
void scatter_tap_rows(const acc_t* taps, int64_t in_rows, const Axis& cols, acc_t* plane) {
  const int64_t width = cols.out_size() * cols.taps;
  for (int64_t h = 0; h < in_rows; ++h) {
    const acc_t* in = taps + h * width;
    acc_t* row = plane + h * cols.in_size;
    for (const OutputTaps& col : cols.outputs) {
      for (int64_t n = col.first; n < col.last; ++n) row[col.start + n] += in[n];
      in += cols.taps;
    }
  }
}

// The kernel rows [ky][W' kx] of every row phase of one channel: the bank's own memory where every column has a
// phase of its own and the bank is in the accumulation dtype, else gathered once per channel into `buffer`.
template <typename scalar_t, typename acc_t>
const acc_t* kernel_rows(const scalar_t* bank, const Axis& rows, const Axis& cols, std::vector<acc_t>& buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (cols.phase_per_output) return bank;
  }
  const int64_t phase_size = cols.phases * cols.taps;  // the bank's elements per row tap
  buffer.resize(rows.phases * rows.taps * cols.out_size() * cols.taps);
  acc_t* out = buffer.data();
  for (int64_t r = 0; r < rows.phases * rows.taps; ++r) {
    for (const OutputTaps& col : cols.outputs) {
      const scalar_t* kernel = bank + r * phase_size + col.phase * cols.taps;
      for (int64_t n = 0; n < cols.taps; ++n) out[n] = static_cast<acc_t>(kernel[n]);
      out += cols.taps;
    }
  }
  return buffer.data();
}

// The adjoint of `kernel_rows` into a zeroed bank: each column's taps added to its phase's.
template <typename scalar_t, typename acc_t>
void scatter_kernel_rows(const acc_t* kernel, const Axis& rows, const Axis& cols, scalar_t* bank) {
  const int64_t phase_size = cols.phases * cols.taps;
  std::vector<acc_t> sums(phase_size);
  for (int64_t r = 0; r < rows.phases * rows.taps; ++r) {
    std::fill(sums.begin(), sums.end(), acc_t(0));
    for (const OutputTaps& col : cols.outputs) {
      for (int64_t n = 0; n < cols.taps; ++n) sums[col.phase * cols.taps + n] += kernel[n];
      kernel += cols.taps;
    }
    std::transform(sums.begin(), sums.end(), bank + r * phase_size, [](acc_t v) { return static_cast<scalar_t>(v); });
  }
}

// The sizes every pass shares, and the channels each parallel task takes.
struct Problem {
  int64_t batch, channels;
  Axis rows, cols;

  int64_t width() const { return cols.out_size() * cols.taps; }
  int64_t in_plane() const { return rows.in_size * cols.in_size; }
  int64_t out_plane() const { return rows.out_size() * cols.out_size(); }
  int64_t bank_channel() const { return rows.phases * rows.taps * cols.phases * cols.taps; }
  int64_t kernel_size() const { return rows.taps * width(); }  // one row phase's kernel rows

  int64_t grain() const {
    const int64_t work = std::max<int64_t>(1, batch * rows.out_size() * rows.taps * width());
    return std::max<int64_t>(1, kMinTaskWork / work);
  }
};

void check_planes(const Tensor& planes, const char* name) {
  TORCH_CHECK(planes.dim() == 4 && planes.is_cpu(), "resize_cpu: ", name, " must be a [B, C, H, W] CPU tensor, got ",
              planes.sizes(), " on ", planes.device());
}

// The problem of planes [B, C, ...] of inputs [in_rows, in_cols] and a bank of `bank_shape`, checking that the
// other tensor (bank, grad_y or x) has their dtype.
Problem make_problem(const Tensor& planes, const Tensor& other, at::IntArrayRef bank_shape, int64_t in_rows,
                     int64_t in_cols, const Tensor& row_start, const Tensor& row_phase, const Tensor& col_start,
                     const Tensor& col_phase) {
  TORCH_CHECK(bank_shape.size() == 5 && bank_shape[0] == planes.size(1),
              "resize_cpu: the bank must be [C, Py, ky, Px, kx] with C = ", planes.size(1), ", got ", bank_shape);
  TORCH_CHECK(other.scalar_type() == planes.scalar_type(), "resize_cpu: tensors of one dtype needed, got ",
              planes.scalar_type(), " and ", other.scalar_type());
  return {planes.size(0), planes.size(1),
          make_axis(row_start, row_phase, in_rows, bank_shape[2], bank_shape[1], "row"),
          make_axis(col_start, col_phase, in_cols, bank_shape[4], bank_shape[3], "col")};
}

template <typename scalar_t>
void forward_kernel(const Problem& p, const scalar_t* x, const scalar_t* bank, scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, p.channels, p.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> kernel_buffer, taps(p.rows.in_size * p.width()), sums(p.width());
    for (int64_t c = begin; c < end; ++c) {
      const acc_t* kernel = kernel_rows(bank + c * p.bank_channel(), p.rows, p.cols, kernel_buffer);
      for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t plane = b * p.channels + c;
        gather_tap_rows(x + plane * p.in_plane(), p.rows.in_size, p.cols, taps.data());
        scalar_t* out = y + plane * p.out_plane();
        for (const OutputTaps& row : p.rows.outputs) {
          const acc_t* rows = kernel + row.phase * p.kernel_size();
          std::fill(sums.begin(), sums.end(), acc_t(0));
          for (int64_t m = row.first; m < row.last; ++m)
            multiply_add(rows + m * p.width(), taps.data() + (row.start + m) * p.width(), sums.data(), p.width());
          const acc_t* segment = sums.data();
          for (int64_t j = 0; j < p.cols.out_size(); ++j, segment += p.cols.taps) {
            acc_t sum = 0;
            for (int64_t n = 0; n < p.cols.taps; ++n) sum += segment[n];
            *out++ = static_cast<scalar_t>(sum);
          }
        }
      }
    }
  });
}

// Each output row's gradient, repeated over its columns' taps: the tap-row layout of grad_y.
template <typename scalar_t, typename acc_t>
void spread_row(const scalar_t* grad_row, int64_t out_cols, int64_t taps, acc_t* spread) {
  for (int64_t j = 0; j < out_cols; ++j, spread += taps) std::fill(spread, spread + taps, static_cast<acc_t>(grad_row[j]));
}

template <typename scalar_t>
void grad_input_kernel(const Problem& p, const scalar_t* grad_y, const scalar_t* bank, scalar_t* grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, p.channels, p.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> kernel_buffer, taps(p.rows.in_size * p.width()), spread(p.width()), plane_sums(p.in_plane());
    for (int64_t c = begin; c < end; ++c) {
      const acc_t* kernel = kernel_rows(bank + c * p.bank_channel(), p.rows, p.cols, kernel_buffer);
      for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t plane = b * p.channels + c;
        std::fill(taps.begin(), taps.end(), acc_t(0));
        const scalar_t* grad_row = grad_y + plane * p.out_plane();
        for (const OutputTaps& row : p.rows.outputs) {
          spread_row(grad_row, p.cols.out_size(), p.cols.taps, spread.data());
          grad_row += p.cols.out_size();
          const acc_t* rows = kernel + row.phase * p.kernel_size();
          for (int64_t m = row.first; m < row.last; ++m)
            multiply_add(rows + m * p.width(), spread.data(), taps.data() + (row.start + m) * p.width(), p.width());
        }
        std::fill(plane_sums.begin(), plane_sums.end(), acc_t(0));
        scatter_tap_rows(taps.data(), p.rows.in_size, p.cols, plane_sums.data());
        std::transform(plane_sums.begin(), plane_sums.end(), grad_x + plane * p.in_plane(),
                       [](acc_t v) { return static_cast<scalar_t>(v); });
      }
    }
  });
}

template <typename scalar_t>
void grad_bank_kernel(const Problem& p, const scalar_t* grad_y, const scalar_t* x, scalar_t* grad_bank) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, p.channels, p.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> taps(p.rows.in_size * p.width()), spread(p.width()),
        kernel(p.rows.phases * p.kernel_size());
    for (int64_t c = begin; c < end; ++c) {
      std::fill(kernel.begin(), kernel.end(), acc_t(0));
      for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t plane = b * p.channels + c;
        gather_tap_rows(x + plane * p.in_plane(), p.rows.in_size, p.cols, taps.data());
        const scalar_t* grad_row = grad_y + plane * p.out_plane();
        for (const OutputTaps& row : p.rows.outputs) {
          spread_row(grad_row, p.cols.out_size(), p.cols.taps, spread.data());
          grad_row += p.cols.out_size();
          acc_t* rows = kernel.data() + row.phase * p.kernel_size();
          for (int64_t m = row.first; m < row.last; ++m)
            multiply_add(spread.data(), taps.data() + (row.start + m) * p.width(), rows + m * p.width(), p.width());
        }
      }
      scatter_kernel_rows(kernel.data(), p.rows, p.cols, grad_bank + c * p.bank_channel());
    }
  });
}

#define SMPCONV_DISPATCH(tensor, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, (tensor).scalar_type(), "resize_cpu", __VA_ARGS__)

Tensor forward(const Tensor& x, const Tensor& bank, const Tensor& row_start, const Tensor& row_phase,
               const Tensor& col_start, const Tensor& col_phase) {
  check_planes(x, "x");
  const Problem p = make_problem(x, bank, bank.sizes(), x.size(2), x.size(3), row_start, row_phase, col_start,
                                 col_phase);
  const Tensor input = x.contiguous(), weights = bank.contiguous();
  Tensor y = at::empty({p.batch, p.channels, p.rows.out_size(), p.cols.out_size()}, x.options());
  SMPCONV_DISPATCH(x, [&] {
    forward_kernel<scalar_t>(p, input.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
  });
  return y;
}

Tensor grad_input(const Tensor& grad_y, const Tensor& bank, const Tensor& row_start, const Tensor& row_phase,
                  const Tensor& col_start, const Tensor& col_phase, int64_t in_height, int64_t in_width) {
  check_planes(grad_y, "grad_y");
  const Problem p = make_problem(grad_y, bank, bank.sizes(), in_height, in_width, row_start, row_phase, col_start,
                                 col_phase);
  TORCH_CHECK(grad_y.size(2) == p.rows.out_size() && grad_y.size(3) == p.cols.out_size(),
              "resize_cpu: grad_y must be [B, C, ", p.rows.out_size(), ", ", p.cols.out_size(), "], got ",
              grad_y.sizes());
  const Tensor grad = grad_y.contiguous(), weights = bank.contiguous();
  Tensor grad_x = at::empty({p.batch, p.channels, in_height, in_width}, grad_y.options());
  SMPCONV_DISPATCH(grad_y, [&] {
    grad_input_kernel<scalar_t>(p, grad.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(),
                                grad_x.data_ptr<scalar_t>());
  });
  return grad_x;
}

Tensor grad_bank(const Tensor& grad_y, const Tensor& x, const Tensor& row_start, const Tensor& row_phase,
                 const Tensor& col_start, const Tensor& col_phase, at::IntArrayRef bank_shape) {
  check_planes(x, "x");
  check_planes(grad_y, "grad_y");
  const Problem p = make_problem(x, grad_y, bank_shape, x.size(2), x.size(3), row_start, row_phase, col_start,
                                 col_phase);
  TORCH_CHECK(grad_y.size(0) == p.batch && grad_y.size(1) == p.channels &&
                  grad_y.size(2) == p.rows.out_size() && grad_y.size(3) == p.cols.out_size(),
              "resize_cpu: grad_y must be [", p.batch, ", ", p.channels, ", ", p.rows.out_size(), ", ",
              p.cols.out_size(), "], got ", grad_y.sizes());
  const Tensor grad = grad_y.contiguous(), input = x.contiguous();
  Tensor result = at::empty(bank_shape, x.options());
  SMPCONV_DISPATCH(x, [&] {
    grad_bank_kernel<scalar_t>(p, grad.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(), result.data_ptr<scalar_t>());
  });
  return result;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using pybind11::arg;
  const auto no_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  m.def("forward", &forward, "y", arg("x"), arg("bank"), arg("row_start"), arg("row_phase"), arg("col_start"),
        arg("col_phase"), no_gil);
  m.def("grad_input", &grad_input, "the adjoint in x", arg("grad_y"), arg("bank"), arg("row_start"),
        arg("row_phase"), arg("col_start"), arg("col_phase"), arg("in_height"), arg("in_width"), no_gil);
  m.def("grad_bank", &grad_bank, "the adjoint in the bank", arg("grad_y"), arg("x"), arg("row_start"),
        arg("row_phase"), arg("col_start"), arg("col_phase"), arg("bank_shape"), no_gil);
}
