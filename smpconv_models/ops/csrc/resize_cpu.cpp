// The resizing convolution's depthwise taps on CPUs, and their adjoints (smpconv_models/ops/resize_cpu.py):
//
//   y[b, c, i, j] = sum_{m < ky, n < kx} bank[c, row_phase[i], m, col_phase[j], n]
//                                          * x[b, c, row_start[i] + m, col_start[j] + n]      (x = 0 outside)
//
// Layout: tap rows. The tap rows of an input plane, taps[h][j kx + n] = x[h][col_start[j] + n] (zero outside x),
// put the kx taps of every output column side by side, W' kx values per input row; the kernel rows of a row phase
// p, kernel[m][j kx + n] = bank[c, p, m, col_phase[j], n], have the same layout (they are the bank itself where
// every column has a phase of its own). Every pass is then a sum of products of such rows, `sum_products`, a
// contiguous loop the compiler vectorises, summing a tile of positions in registers, with no bounds checks (rows
// outside x are left out of the sums, columns outside it are zeros of the tap rows):
//   forward     per output row i: sum over m of kernel[m] * taps[row_start[i] + m], then each column's kx taps
//               summed;
//   grad_input  per input row h: sum over the (i, m) that read it of kernel[m] * grad_y[i] (spread over the taps),
//               then added to the input row where the taps lie (the adjoint of the gather);
//   grad_bank   per kernel row (i, m): sum over the batch of grad_y[b, i] (spread) * taps_b[row_start[i] + m].
//
// The bank is given whole, or sampled from points the channels share: bank[c] = sum_q weights[c, q] interp[q]
// (`*_points`), each channel's bank made where it is used and never stored whole (at an arbitrary scale it has
// k'^2 values per output pixel and channel, the points' interpolation a C-th of that); the gradient of each
// channel's bank is then folded into the points' values and interpolation as it is made.
//
// Parallel over channels, the batch looped inside: a channel's kernel rows are made once and stay in cache over
// the batch, no two threads write the same element, and every sum runs in one order: results do not depend on the
// number of threads. Accumulation in float for bfloat16 (at::opmath_type), in the input's dtype otherwise.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using at::Tensor;

// multiply-adds per parallel task at least: fewer cost more to schedule than they save
constexpr int64_t kMinTaskWork = 1 << 16;
// bytes of a `Lanes` vector: one AVX-512 register, two AVX2 ones
constexpr int64_t kVectorBytes = 64;
// vectors of positions `sum_products` sums in registers at once (4 AVX-512 or 8 AVX2 registers)
constexpr int kTileVectors = 4;
// samples whose tap rows grad_bank holds at once: each kernel row's sums are loaded and stored once per block
constexpr int64_t kBatchBlock = 8;

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
  int64_t pad_before, pad_after;  // the zeros the outputs' taps reach before and after the input

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
  Axis axis{in_size, taps, phases, std::vector<OutputTaps>(start.numel()), phases == start.numel(), 0, 0};
  for (int64_t i = 0; i < start.numel(); ++i) {
    TORCH_CHECK(p[i] >= 0 && p[i] < phases, "resize_cpu: ", name, "_phase[", i, "] = ", p[i], " is not one of the ",
                phases, " phases of the bank");
    const int64_t first = std::clamp<int64_t>(-s[i], 0, taps);
    const int64_t last = std::clamp<int64_t>(in_size - s[i], first, taps);
    axis.outputs[i] = {s[i], first, last, p[i]};
    axis.phase_per_output = axis.phase_per_output && p[i] == i;
    axis.pad_before = std::max(axis.pad_before, -s[i]);
    axis.pad_after = std::max(axis.pad_after, s[i] + taps - in_size);
  }
  return axis;
}

// The acc_t lanes of one vector, a GCC / Clang vector extension: the compiler maps it onto the CPU's registers.
template <typename acc_t>
struct Lanes {
  static constexpr int64_t kCount = kVectorBytes / sizeof(acc_t);
  typedef acc_t Vector __attribute__((vector_size(kVectorBytes)));

  static Vector load(const acc_t* from) {
    Vector v;
    std::memcpy(&v, from, sizeof v);
    return v;
  }
  static void store(acc_t* to, Vector v) { std::memcpy(to, &v, sizeof v); }
};

// A zeroed buffer of `size` elements that is read or written a vector at a time: a vector's slack after them.
template <typename acc_t>
std::vector<acc_t> with_slack(int64_t size) {
  return std::vector<acc_t>(size + Lanes<acc_t>::kCount);
}

// Two rows of a pass's operands.
template <typename acc_t>
struct RowPair {
  const acc_t* a;
  const acc_t* b;
};

// out[t] += sum over the pairs of a[t] b[t] for the kVectors vectors of positions from t0 on, summed in registers.
template <typename acc_t, int kVectors>
inline void sum_products_block(const std::vector<RowPair<acc_t>>& pairs, int64_t t0, acc_t* out) {
  using L = Lanes<acc_t>;
  typename L::Vector sums[kVectors];
  for (int k = 0; k < kVectors; ++k) sums[k] = L::load(out + t0 + k * L::kCount);
  for (const RowPair<acc_t>& pair : pairs)
    for (int k = 0; k < kVectors; ++k)
      sums[k] += L::load(pair.a + t0 + k * L::kCount) * L::load(pair.b + t0 + k * L::kCount);
  for (int k = 0; k < kVectors; ++k) L::store(out + t0 + k * L::kCount, sums[k]);
}

// out[t] += sum over the pairs of a[t] b[t] for t < width: every pass's inner loop.
template <typename acc_t>
void sum_products(const std::vector<RowPair<acc_t>>& pairs, int64_t width, acc_t* out) {
  constexpr int64_t lanes = Lanes<acc_t>::kCount;
  int64_t t0 = 0;
  for (; t0 + kTileVectors * lanes <= width; t0 += kTileVectors * lanes)
    sum_products_block<acc_t, kTileVectors>(pairs, t0, out);
  for (; t0 + lanes <= width; t0 += lanes) sum_products_block<acc_t, 1>(pairs, t0, out);
  for (const RowPair<acc_t>& pair : pairs)
    for (int64_t t = t0; t < width; ++t) out[t] += pair.a[t] * pair.b[t];
}

// The sizes every pass shares, and the channels each parallel task takes.
struct Problem {
  int64_t batch, channels;
  Axis rows, cols;

  int64_t width() const { return cols.out_size() * cols.taps; }  // of a tap row
  int64_t in_plane() const { return rows.in_size * cols.in_size; }
  int64_t out_plane() const { return rows.out_size() * cols.out_size(); }
  int64_t bank_channel() const { return rows.phases * rows.taps * cols.phases * cols.taps; }
  int64_t kernel_size() const { return rows.taps * width(); }  // one row phase's kernel rows
  int64_t padded_width() const { return cols.pad_before + cols.in_size + cols.pad_after; }

  int64_t grain() const {
    const int64_t work = std::max<int64_t>(1, batch * rows.out_size() * rows.taps * width());
    return std::max<int64_t>(1, kMinTaskWork / work);
  }
};

// The tap rows [in_rows][W' kx] of one input plane, through `padded_row` (zeros around the input's row, and a
// vector's slack after them). Each column's taps are copied a vector at a time, the next column overwriting the
// excess: `taps` needs a vector's slack after the rows.
template <typename scalar_t, typename acc_t>
void gather_tap_rows(const Problem& p, const scalar_t* plane, acc_t* padded_row, acc_t* taps) {
  using L = Lanes<acc_t>;
  acc_t* row = padded_row + p.cols.pad_before;
  for (int64_t h = 0; h < p.rows.in_size; ++h) {
    std::transform(plane + h * p.cols.in_size, plane + (h + 1) * p.cols.in_size, row,
                   [](scalar_t v) { return static_cast<acc_t>(v); });
    for (const OutputTaps& col : p.cols.outputs) {
      for (int64_t n = 0; n < p.cols.taps; n += L::kCount) L::store(taps + n, L::load(row + col.start + n));
      taps += p.cols.taps;
    }
  }
}

// The adjoint of `gather_tap_rows` for one tap row: out (a row of the input) = the columns' taps added where they
// lie, through `padded_row`; tap by tap, as the columns' taps overlap.
template <typename acc_t, typename scalar_t>
void scatter_tap_row(const Problem& p, const acc_t* taps, acc_t* padded_row, scalar_t* out) {
  std::fill_n(padded_row, p.padded_width(), acc_t(0));
  acc_t* row = padded_row + p.cols.pad_before;
  for (int64_t n = 0; n < p.cols.taps; ++n) {
    const acc_t* tap = taps + n;
    for (const OutputTaps& col : p.cols.outputs) {
      row[col.start + n] += *tap;
      tap += p.cols.taps;
    }
  }
  std::transform(row, row + p.cols.in_size, out, [](acc_t v) { return static_cast<scalar_t>(v); });
}

// Each output row of a plane's gradient [H'][W'], repeated over its columns' taps: [H'][W' kx], the tap-row
// layout, written a vector at a time as the tap rows are (`spread` needs a vector's slack).
template <typename scalar_t, typename acc_t>
void spread_rows(const Problem& p, const scalar_t* grad, acc_t* spread) {
  using L = Lanes<acc_t>;
  for (int64_t j = 0; j < p.out_plane(); ++j, spread += p.cols.taps) {
    const typename L::Vector value = typename L::Vector{} + static_cast<acc_t>(grad[j]);
    for (int64_t n = 0; n < p.cols.taps; n += L::kCount) L::store(spread + n, value);
  }
}

// The kernel rows [row phases][ky][W' kx] of one channel: the bank's own memory where every column has a phase of
// its own and the bank is in the accumulation dtype, else gathered into `buffer`.
template <typename scalar_t, typename acc_t>
const acc_t* kernel_rows(const Problem& p, const scalar_t* bank, std::vector<acc_t>& buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (p.cols.phase_per_output) return bank;
  }
  const int64_t phase_size = p.cols.phases * p.cols.taps;  // the bank's elements per row tap
  buffer.resize(p.rows.phases * p.kernel_size());
  acc_t* out = buffer.data();
  for (int64_t r = 0; r < p.rows.phases * p.rows.taps; ++r) {
    for (const OutputTaps& col : p.cols.outputs) {
      std::transform(bank + r * phase_size + col.phase * p.cols.taps, bank + r * phase_size + (col.phase + 1) *
                     p.cols.taps, out, [](scalar_t v) { return static_cast<acc_t>(v); });
      out += p.cols.taps;
    }
  }
  return buffer.data();
}

// Where grad_bank sums the kernel rows of one channel, zeroed: the bank gradient's own memory where `kernel_rows`
// reads the bank's, else `buffer`.
template <typename scalar_t, typename acc_t>
acc_t* kernel_row_sums(const Problem& p, scalar_t* grad_bank, std::vector<acc_t>& buffer) {
  buffer.resize(p.rows.phases * p.kernel_size());
  acc_t* sums = buffer.data();
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (p.cols.phase_per_output) sums = grad_bank;
  }
  std::fill_n(sums, p.rows.phases * p.kernel_size(), acc_t(0));
  return sums;
}

// The adjoint of `kernel_rows`: one channel's bank, each column's taps added to its phase's.
template <typename scalar_t, typename acc_t>
void scatter_kernel_rows(const Problem& p, const acc_t* kernel, scalar_t* bank) {
  const int64_t phase_size = p.cols.phases * p.cols.taps;
  std::vector<acc_t> sums(phase_size);
  for (int64_t r = 0; r < p.rows.phases * p.rows.taps; ++r) {
    std::fill(sums.begin(), sums.end(), acc_t(0));
    for (const OutputTaps& col : p.cols.outputs) {
      for (int64_t n = 0; n < p.cols.taps; ++n) sums[col.phase * p.cols.taps + n] += kernel[n];
      kernel += p.cols.taps;
    }
    std::transform(sums.begin(), sums.end(), bank + r * phase_size, [](acc_t v) { return static_cast<scalar_t>(v); });
  }
}

// Where each channel's bank comes from: the bank [C][T] itself (T = Py ky Px kx, a channel's values)...
template <typename scalar_t>
struct WholeBank {
  const scalar_t* bank;
  int64_t channel_size;

  template <typename acc_t>
  const scalar_t* channel(int64_t c, std::vector<acc_t>&) const { return bank + c * channel_size; }
};

// A vector of lanes from `from`, converted to acc_t.
template <typename acc_t, typename scalar_t>
typename Lanes<acc_t>::Vector load_as(const scalar_t* from) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return Lanes<acc_t>::load(from);
  } else {
    typename Lanes<acc_t>::Vector v;
    for (int64_t k = 0; k < Lanes<acc_t>::kCount; ++k) v[k] = static_cast<acc_t>(from[k]);
    return v;
  }
}

// ... or the points: bank[c][t] = sum_q weights[c][q] interp[q][t], made in `scratch` a vector of t at a time
// (each value written once, the points' rows read once).
template <typename scalar_t>
struct SampledBank {
  const scalar_t* weights;  // [C][points]
  const scalar_t* interp;  // [points][T]
  int64_t points, channel_size;

  template <typename acc_t>
  const acc_t* channel(int64_t c, std::vector<acc_t>& scratch) const {
    using L = Lanes<acc_t>;
    scratch.resize(channel_size);
    const scalar_t* values = weights + c * points;
    int64_t t = 0;
    for (; t + L::kCount <= channel_size; t += L::kCount) {
      typename L::Vector sum{};
      for (int64_t q = 0; q < points; ++q)
        sum += static_cast<acc_t>(values[q]) * load_as<acc_t>(interp + q * channel_size + t);
      L::store(scratch.data() + t, sum);
    }
    for (; t < channel_size; ++t) {
      acc_t sum = 0;
      for (int64_t q = 0; q < points; ++q)
        sum += static_cast<acc_t>(values[q]) * static_cast<acc_t>(interp[q * channel_size + t]);
      scratch[t] = sum;
    }
    return scratch.data();
  }
};

// Where grad_bank puts each channel's bank gradient: the bank gradient [C][T] itself...
template <typename scalar_t, typename acc_t>
struct WholeBankGradient {
  scalar_t* grad_bank;

  // channels whose gradients one parallel task takes together at least: any (no channel shares an output)
  int64_t block(const Problem&) const { return 1; }
  // zeroed sums of channel c's kernel rows: the gradient's own memory where it has their layout
  acc_t* sums(const Problem& p, int64_t c, std::vector<acc_t>& buffer) const {
    return kernel_row_sums(p, grad_bank + c * p.bank_channel(), buffer);
  }
  void add(const Problem& p, int64_t c, const acc_t* kernel, const std::vector<acc_t>& buffer,
           std::vector<acc_t>&) const {
    if (kernel == buffer.data()) scatter_kernel_rows(p, kernel, grad_bank + c * p.bank_channel());
  }
};

// ... or into the points' values and interpolation: grad_weights[c][q] = <grad_bank[c], interp[q]>, and
// grad_interp[q] = sum_c weights[c][q] grad_bank[c], summed per block of channels in `partial` (one per block,
// blocks fixed whatever the number of threads, added in order at the end: the same sums at any thread count).
template <typename scalar_t, typename acc_t>
struct SampledBankGradient {
  SampledBank<scalar_t> bank;
  scalar_t* grad_weights;  // [C][points]
  acc_t* partial;  // [blocks][points][T]
  int64_t channels_per_block;

  int64_t block(const Problem&) const { return channels_per_block; }
  acc_t* sums(const Problem& p, int64_t, std::vector<acc_t>& buffer) const {
    buffer.assign(p.rows.phases * p.kernel_size(), acc_t(0));
    return buffer.data();
  }
  void add(const Problem& p, int64_t c, const acc_t* kernel, const std::vector<acc_t>&,
           std::vector<acc_t>& scratch) const {
    const acc_t* grad_bank = kernel;  // the kernel rows are the bank's layout where every column has its phase
    if (!p.cols.phase_per_output) {
      scratch.resize(p.bank_channel());
      scatter_kernel_rows(p, kernel, scratch.data());
      grad_bank = scratch.data();
    }
    // a vector of t at a time, every point's sums at once: the gradient read once, a register sum per point
    using L = Lanes<acc_t>;
    const int64_t points = bank.points, size = bank.channel_size;
    acc_t* block_sums = partial + (c / channels_per_block) * points * size;
    const scalar_t* values = bank.weights + c * points;
    std::vector<acc_t> dots(points * L::kCount);  // a vector of lanes per point
    int64_t t = 0;
    for (; t + L::kCount <= size; t += L::kCount) {
      const typename L::Vector gradient = L::load(grad_bank + t);
      for (int64_t q = 0; q < points; ++q) {
        acc_t* dot = dots.data() + q * L::kCount;
        L::store(dot, L::load(dot) + gradient * load_as<acc_t>(bank.interp + q * size + t));
        acc_t* sums = block_sums + q * size + t;
        L::store(sums, L::load(sums) + static_cast<acc_t>(values[q]) * gradient);
      }
    }
    for (int64_t q = 0; q < points; ++q) {
      acc_t dot = 0;
      for (int64_t k = 0; k < L::kCount; ++k) dot += dots[q * L::kCount + k];
      for (int64_t r = t; r < size; ++r) {
        dot += grad_bank[r] * static_cast<acc_t>(bank.interp[q * size + r]);
        block_sums[q * size + r] += static_cast<acc_t>(values[q]) * grad_bank[r];
      }
      grad_weights[c * points + q] = static_cast<scalar_t>(dot);
    }
  }
};

// Per input row, the (output row, row tap) pairs that read it, in output order: grad_input sums them per row.
std::vector<std::vector<std::pair<int64_t, int64_t>>> row_readers(const Axis& rows) {
  std::vector<std::vector<std::pair<int64_t, int64_t>>> readers(rows.in_size);
  for (int64_t i = 0; i < rows.out_size(); ++i) {
    const OutputTaps& row = rows.outputs[i];
    for (int64_t m = row.first; m < row.last; ++m) readers[row.start + m].emplace_back(i, m);
  }
  return readers;
}

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

// y: per plane and output row, the kernel's rows times the tap rows they meet, each column's taps summed.
template <typename scalar_t, typename Bank>
void forward_kernel(const Problem& p, const scalar_t* x, const Bank& bank, scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, p.channels, p.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> bank_buffer, kernel_buffer, padded_row(with_slack<acc_t>(p.padded_width())),
        taps(with_slack<acc_t>(p.rows.in_size * p.width())), sums(p.width());
    std::vector<RowPair<acc_t>> pairs;
    for (int64_t c = begin; c < end; ++c) {
      const acc_t* kernel = kernel_rows(p, bank.channel(c, bank_buffer), kernel_buffer);
      for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t plane = b * p.channels + c;
        gather_tap_rows(p, x + plane * p.in_plane(), padded_row.data(), taps.data());
        scalar_t* out = y + plane * p.out_plane();
        for (const OutputTaps& row : p.rows.outputs) {
          pairs.clear();
          for (int64_t m = row.first; m < row.last; ++m)
            pairs.push_back({kernel + row.phase * p.kernel_size() + m * p.width(),
                             taps.data() + (row.start + m) * p.width()});
          std::fill(sums.begin(), sums.end(), acc_t(0));
          sum_products(pairs, p.width(), sums.data());
          for (const acc_t* segment = sums.data(); segment < sums.data() + p.width(); segment += p.cols.taps)
            *out++ = static_cast<scalar_t>(std::accumulate(segment, segment + p.cols.taps, acc_t(0)));
        }
      }
    }
  });
}

// grad_x: per plane and input row, the kernel rows that met it times the gradients of their outputs (a sum, not
// a scatter), its tap row then added where its taps lie.
template <typename scalar_t, typename Bank>
void grad_input_kernel(const Problem& p, const scalar_t* grad_y, const Bank& bank, scalar_t* grad_x) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto readers = row_readers(p.rows);
  at::parallel_for(0, p.channels, p.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> bank_buffer, kernel_buffer, padded_row(p.padded_width()),
        spread(with_slack<acc_t>(p.rows.out_size() * p.width())), sums(p.width());
    std::vector<RowPair<acc_t>> pairs;
    for (int64_t c = begin; c < end; ++c) {
      const acc_t* kernel = kernel_rows(p, bank.channel(c, bank_buffer), kernel_buffer);
      for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t plane = b * p.channels + c;
        spread_rows(p, grad_y + plane * p.out_plane(), spread.data());
        for (int64_t h = 0; h < p.rows.in_size; ++h) {
          pairs.clear();
          for (const auto& [i, m] : readers[h])
            pairs.push_back({kernel + p.rows.outputs[i].phase * p.kernel_size() + m * p.width(),
                             spread.data() + i * p.width()});
          std::fill(sums.begin(), sums.end(), acc_t(0));
          sum_products(pairs, p.width(), sums.data());
          scatter_tap_row(p, sums.data(), padded_row.data(), grad_x + plane * p.in_plane() + h * p.cols.in_size);
        }
      }
    }
  });
}

// grad_bank: per channel and kernel row, the gradients of the outputs it made times the tap rows it met, summed
// over the batch in order, blocks of samples at a time; `gradient` takes each channel's sums.
template <typename scalar_t, typename Gradient>
void grad_bank_kernel(const Problem& p, const scalar_t* grad_y, const scalar_t* x, const Gradient& gradient) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t block = gradient.block(p), blocks = (p.channels + block - 1) / block;
  at::parallel_for(0, blocks, std::max<int64_t>(1, p.grain() / block), [&](int64_t first, int64_t last) {
    const int64_t samples_block = std::min(kBatchBlock, p.batch);
    const int64_t taps_size = p.rows.in_size * p.width(), spread_size = p.rows.out_size() * p.width();
    std::vector<acc_t> padded_row(with_slack<acc_t>(p.padded_width())),
        taps(with_slack<acc_t>(samples_block * taps_size)), spread(with_slack<acc_t>(samples_block * spread_size)),
        kernel_buffer, scratch;
    std::vector<RowPair<acc_t>> pairs;
    for (int64_t c = first * block; c < std::min(last * block, p.channels); ++c) {
      acc_t* kernel = gradient.sums(p, c, kernel_buffer);
      for (int64_t b0 = 0; b0 < p.batch; b0 += samples_block) {
        const int64_t samples = std::min(samples_block, p.batch - b0);
        for (int64_t s = 0; s < samples; ++s) {
          const int64_t plane = (b0 + s) * p.channels + c;
          gather_tap_rows(p, x + plane * p.in_plane(), padded_row.data(), taps.data() + s * taps_size);
          spread_rows(p, grad_y + plane * p.out_plane(), spread.data() + s * spread_size);
        }
        for (int64_t i = 0; i < p.rows.out_size(); ++i) {
          const OutputTaps& row = p.rows.outputs[i];
          for (int64_t m = row.first; m < row.last; ++m) {
            pairs.clear();
            for (int64_t s = 0; s < samples; ++s)
              pairs.push_back({spread.data() + s * spread_size + i * p.width(),
                               taps.data() + s * taps_size + (row.start + m) * p.width()});
            sum_products(pairs, p.width(), kernel + row.phase * p.kernel_size() + m * p.width());
          }
        }
      }
      gradient.add(p, c, kernel, kernel_buffer, scratch);
    }
  });
}

#define SMPCONV_DISPATCH(tensor, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, (tensor).scalar_type(), "resize_cpu", __VA_ARGS__)

// The bank's shape [C, Py, ky, Px, kx]: the bank's own, or that of points' values [C, P] and interpolation
// [P, Py, ky, Px, kx].
std::vector<int64_t> bank_shape_of(const std::optional<Tensor>& bank, const std::optional<Tensor>& weights,
                                   const std::optional<Tensor>& interp) {
  if (bank) return bank->sizes().vec();
  TORCH_CHECK(weights && interp, "resize_cpu: give the bank, or the points' values and interpolation");
  TORCH_CHECK(weights->dim() == 2 && interp->dim() == 5 && weights->size(1) == interp->size(0),
              "resize_cpu: the points' values must be [C, P] and their interpolation [P, Py, ky, Px, kx], got ",
              weights->sizes(), " and ", interp->sizes());
  TORCH_CHECK(interp->scalar_type() == weights->scalar_type(), "resize_cpu: tensors of one dtype needed, got ",
              weights->scalar_type(), " and ", interp->scalar_type());
  std::vector<int64_t> shape = interp->sizes().vec();
  shape[0] = weights->size(0);
  return shape;
}

// Calls run(source) with the bank's source: the whole bank, or the points (tensors made contiguous first).
template <typename scalar_t, typename Run>
void with_bank(const Problem& p, const std::optional<Tensor>& bank, const std::optional<Tensor>& weights,
               const std::optional<Tensor>& interp, const Run& run) {
  if (bank) {
    const Tensor whole = bank->contiguous();
    run(WholeBank<scalar_t>{whole.data_ptr<scalar_t>(), p.bank_channel()});
  } else {
    const Tensor values = weights->contiguous(), interpolation = interp->contiguous();
    run(SampledBank<scalar_t>{values.data_ptr<scalar_t>(), interpolation.data_ptr<scalar_t>(), values.size(1),
                              p.bank_channel()});
  }
}

Tensor forward(const Tensor& x, const std::optional<Tensor>& bank, const std::optional<Tensor>& weights,
               const std::optional<Tensor>& interp, const Tensor& row_start, const Tensor& row_phase,
               const Tensor& col_start, const Tensor& col_phase) {
  check_planes(x, "x");
  const Problem p = make_problem(x, bank ? *bank : *weights, bank_shape_of(bank, weights, interp), x.size(2),
                                 x.size(3), row_start, row_phase, col_start, col_phase);
  const Tensor input = x.contiguous();
  Tensor y = at::empty({p.batch, p.channels, p.rows.out_size(), p.cols.out_size()}, x.options());
  SMPCONV_DISPATCH(x, [&] {
    with_bank<scalar_t>(p, bank, weights, interp, [&](const auto& source) {
      forward_kernel<scalar_t>(p, input.data_ptr<scalar_t>(), source, y.data_ptr<scalar_t>());
    });
  });
  return y;
}

Tensor grad_input(const Tensor& grad_y, const std::optional<Tensor>& bank, const std::optional<Tensor>& weights,
                  const std::optional<Tensor>& interp, const Tensor& row_start, const Tensor& row_phase,
                  const Tensor& col_start, const Tensor& col_phase, int64_t in_height, int64_t in_width) {
  check_planes(grad_y, "grad_y");
  const Problem p = make_problem(grad_y, bank ? *bank : *weights, bank_shape_of(bank, weights, interp), in_height,
                                 in_width, row_start, row_phase, col_start, col_phase);
  TORCH_CHECK(grad_y.size(2) == p.rows.out_size() && grad_y.size(3) == p.cols.out_size(),
              "resize_cpu: grad_y must be [B, C, ", p.rows.out_size(), ", ", p.cols.out_size(), "], got ",
              grad_y.sizes());
  const Tensor grad = grad_y.contiguous();
  Tensor grad_x = at::empty({p.batch, p.channels, in_height, in_width}, grad_y.options());
  SMPCONV_DISPATCH(grad_y, [&] {
    with_bank<scalar_t>(p, bank, weights, interp, [&](const auto& source) {
      grad_input_kernel<scalar_t>(p, grad.data_ptr<scalar_t>(), source, grad_x.data_ptr<scalar_t>());
    });
  });
  return grad_x;
}

Problem make_grad_problem(const Tensor& grad_y, const Tensor& x, at::IntArrayRef bank_shape, const Tensor& row_start,
                          const Tensor& row_phase, const Tensor& col_start, const Tensor& col_phase) {
  check_planes(x, "x");
  check_planes(grad_y, "grad_y");
  const Problem p = make_problem(x, grad_y, bank_shape, x.size(2), x.size(3), row_start, row_phase, col_start,
                                 col_phase);
  TORCH_CHECK(grad_y.size(0) == p.batch && grad_y.size(1) == p.channels &&
                  grad_y.size(2) == p.rows.out_size() && grad_y.size(3) == p.cols.out_size(),
              "resize_cpu: grad_y must be [", p.batch, ", ", p.channels, ", ", p.rows.out_size(), ", ",
              p.cols.out_size(), "], got ", grad_y.sizes());
  return p;
}

Tensor grad_bank(const Tensor& grad_y, const Tensor& x, const Tensor& row_start, const Tensor& row_phase,
                 const Tensor& col_start, const Tensor& col_phase, at::IntArrayRef bank_shape) {
  const Problem p = make_grad_problem(grad_y, x, bank_shape, row_start, row_phase, col_start, col_phase);
  const Tensor grad = grad_y.contiguous(), input = x.contiguous();
  Tensor result = at::empty(bank_shape, x.options());
  SMPCONV_DISPATCH(x, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    grad_bank_kernel<scalar_t>(p, grad.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(),
                               WholeBankGradient<scalar_t, acc_t>{result.data_ptr<scalar_t>()});
  });
  return result;
}

// The blocks of channels whose interpolation gradients grad_points sums apart, a function of the problem alone
// (never of the threads, which would change the sums): at most kMaxGradientBlocks, fewer where their sums would
// take more than kGradientBytes (fresh memory costs its page faults), but at least two, for two cores.
constexpr int64_t kMaxGradientBlocks = 8;
constexpr int64_t kGradientBytes = 16 << 20;

int64_t gradient_blocks(int64_t channels, int64_t block_bytes) {
  const int64_t fitting = std::clamp<int64_t>(kGradientBytes / std::max<int64_t>(1, block_bytes), 2,
                                              kMaxGradientBlocks);
  return std::max<int64_t>(1, std::min(fitting, channels));
}

std::tuple<Tensor, Tensor> grad_points(const Tensor& grad_y, const Tensor& x, const Tensor& weights,
                                       const Tensor& interp, const Tensor& row_start, const Tensor& row_phase,
                                       const Tensor& col_start, const Tensor& col_phase) {
  TORCH_CHECK(weights.scalar_type() == x.scalar_type(), "resize_cpu: tensors of one dtype needed, got ",
              x.scalar_type(), " and ", weights.scalar_type());
  const Problem p = make_grad_problem(grad_y, x, bank_shape_of(std::nullopt, weights, interp), row_start, row_phase,
                                      col_start, col_phase);
  const Tensor grad = grad_y.contiguous(), input = x.contiguous(), values = weights.contiguous(),
               interpolation = interp.contiguous();
  Tensor grad_weights = at::empty(weights.sizes(), x.options()), grad_interp;
  const int64_t points = weights.size(1);
  SMPCONV_DISPATCH(x, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t blocks = gradient_blocks(p.channels, points * p.bank_channel() * sizeof(acc_t));
    const int64_t channels_per_block = (p.channels + blocks - 1) / blocks;
    const Tensor partial = at::zeros({blocks, points, p.bank_channel()}, x.options().dtype(
        c10::CppTypeToScalarType<acc_t>::value));
    const SampledBank<scalar_t> bank{values.data_ptr<scalar_t>(), interpolation.data_ptr<scalar_t>(), points,
                                     p.bank_channel()};
    grad_bank_kernel<scalar_t>(p, grad.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(),
                               SampledBankGradient<scalar_t, acc_t>{bank, grad_weights.data_ptr<scalar_t>(),
                                                                    partial.data_ptr<acc_t>(), channels_per_block});
    grad_interp = partial.sum(0).to(x.scalar_type()).view(interp.sizes());
  });
  return {grad_weights, grad_interp};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using pybind11::arg;
  const auto no_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  m.def("forward", &forward, "y, of the bank or of the points' values and interpolation", arg("x"), arg("bank"),
        arg("weights"), arg("interp"), arg("row_start"), arg("row_phase"), arg("col_start"), arg("col_phase"),
        no_gil);
  m.def("grad_input", &grad_input, "the adjoint in x", arg("grad_y"), arg("bank"), arg("weights"), arg("interp"),
        arg("row_start"), arg("row_phase"), arg("col_start"), arg("col_phase"), arg("in_height"), arg("in_width"),
        no_gil);
  m.def("grad_bank", &grad_bank, "the adjoint in the bank", arg("grad_y"), arg("x"), arg("row_start"),
        arg("row_phase"), arg("col_start"), arg("col_phase"), arg("bank_shape"), no_gil);
  m.def("grad_points", &grad_points, "the adjoints in the points' values and interpolation", arg("grad_y"),
        arg("x"), arg("weights"), arg("interp"), arg("row_start"), arg("row_phase"), arg("col_start"),
        arg("col_phase"), no_gil);
}
