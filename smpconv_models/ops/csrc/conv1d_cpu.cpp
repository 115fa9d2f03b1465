// The direct 1-D convolution of the long convolution operator on CPUs (smpconv_models/ops/conv1d_cpu.py):
//
//   correlate:    y[b, o, t]  = sum_c sum_j w[o, c, j] x[b, c, t - pad + j]      (x zero outside 0 .. T - 1)
//   grad_weight:  dw[o, c, j] = sum_b sum_t dy[b, o, t] x[b, c, t - pad + j]
//
// for contiguous float32 or float64 tensors x [B, C, T], w [O, C, K], dy [B, O, T]; `correlate` is also the input
// gradient (the transposed, reversed kernel, pad K - 1 - pad). oneDNN runs the sequence models' small kernels (30
// channels, 5 taps) at 86-101 GFLOP/s on a 2-core AVX2 EPYC, whose FMA units peak near 190: its blocked layouts want
// channels in multiples of 8 and reorder around each call, and the causal zeros are a padded copy of x. Here both
// passes are register blocks of fused multiply-adds on the plain layout (104-149 GFLOP/s forward at those shapes):
//
// - correlate: a block of kBlockO output channels x kBlockT vectors of steps, summed in registers over c and j; each
//   tap's weights broadcast from a packed copy of w ([O / kBlockO][C][K][kBlockO]), each step vector loaded once per
//   tap (unaligned) and used kBlockO times. Blocks whose taps reach outside x read a zero-padded window instead.
//   Parallel over (sample, chunk of steps, block of output channels), the blocks innermost: the chunk of x they all
//   read stays in L2 (sMNIST's whole sample, 94 KB; raw Speech Commands' 1.9 MB samples in 15 chunks).
// - grad_weight: a block of kGradO output channels x kGradJ taps of one input channel, summed in registers over a
//   chunk of steps, then added to vector sums per task, whose lanes are added at the end. Each thread takes a range
//   of (block, input channel) and walks the samples and their chunks in its outer loop, so that the chunk of x and
//   dy stays in L2 while it visits them; the steps whose taps reach outside x are summed one at a time.
//
// Of the shapes tried on that EPYC (sMNIST's and raw Speech Commands'), blocks of 6 x 2 and 2 x 5 ran fastest (4 x 3,
// 5 x 2; 1 x 5, 3 x 4, 2 x 4: 1.1-1.8x slower). Every element of y and dw is summed by one thread in one order:
// results do not depend on the number of threads.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using at::Tensor;

// bytes of a vector: AVX's (GCC splits it where the CPU has narrower ones; AVX-512's wider registers are left to
// oneDNN, which the dispatcher times against these kernels)
constexpr int kVectorBytes = 32;
// output channels x step vectors summed at once by `correlate`: 12 accumulators, kBlockT step vectors and a
// broadcast weight fill the 16 AVX registers
constexpr int kBlockO = 6;
constexpr int kBlockT = 2;
// output channels x taps summed at once by `grad_weight`: 10 accumulators, kGradO vectors of dy and one of x
constexpr int kGradO = 2;
constexpr int kGradJ = 5;
// multiply-adds per parallel task at least: fewer cost more to schedule than they save
constexpr int64_t kMinTaskWork = 1 << 16;
// bytes of the rows a chunk of steps covers, at most: they stay in L2 (512 KB a core on an EPYC) while visited
constexpr int64_t kChunkBytes = 128 << 10;

template <typename T>
struct Lanes {
  static constexpr int kCount = kVectorBytes / sizeof(T);
  typedef T Vector __attribute__((vector_size(kVectorBytes)));
};

template <typename T>
typename Lanes<T>::Vector load(const T* from) {
  typename Lanes<T>::Vector v;
  std::memcpy(&v, from, sizeof v);
  return v;
}

template <typename T>
void store(T* to, typename Lanes<T>::Vector v) {
  std::memcpy(to, &v, sizeof v);
}

// Keeps v in a register: GCC would otherwise fold its load into each multiply-add that reads it, loading it once per
// output channel (a load that crosses a cache line costs two)
template <typename V>
void in_register(V& v) {
#if defined(__AVX__)
  asm("" : "+x"(v));
#endif
}

template <typename T>
T horizontal_sum(typename Lanes<T>::Vector v) {
  T sum = 0;
  for (int l = 0; l < Lanes<T>::kCount; ++l) sum += v[l];
  return sum;
}

// ---- correlate -------------------------------------------------------------------------------------------------

// y[i, l] (i < kBlockO, l < span) = sum_c sum_j w[c, j, i] x[c row, l + j], x's rows `x_row` apart
template <typename T>
void correlate_block(const T* x, int64_t x_row, const T* packed_w, int64_t channels, int64_t taps, T* out) {
  using Vector = typename Lanes<T>::Vector;
  constexpr int lanes = Lanes<T>::kCount;
  Vector acc[kBlockO][kBlockT] = {};
  for (int64_t c = 0; c < channels; ++c) {
    const T* row = x + c * x_row;
    const T* w = packed_w + c * taps * kBlockO;
    for (int64_t j = 0; j < taps; ++j) {
      Vector steps[kBlockT];
      for (int u = 0; u < kBlockT; ++u) steps[u] = load(row + j + u * lanes);
      for (int i = 0; i < kBlockO; ++i) {
        const T weight = w[j * kBlockO + i];
        for (int u = 0; u < kBlockT; ++u) acc[i][u] += weight * steps[u];
      }
    }
  }
  for (int i = 0; i < kBlockO; ++i)
    for (int u = 0; u < kBlockT; ++u) store(out + (i * kBlockT + u) * lanes, acc[i][u]);
}

// Steps per chunk, a multiple of `multiple`: `rows` rows of a chunk fill about kChunkBytes (raw Speech Commands'
// 16,000 steps of 30 channels, 1.9 MB a sample, would otherwise be read from L3 once per block of output channels)
template <typename T>
int64_t chunk_steps(int64_t rows, int64_t multiple) {
  return std::max<int64_t>(1, kChunkBytes / int64_t(sizeof(T)) / std::max<int64_t>(1, rows) / multiple) * multiple;
}

template <typename T>
Tensor correlate_typed(const Tensor& x, const Tensor& w, int64_t pad) {
  constexpr int64_t span = kBlockT * Lanes<T>::kCount;  // steps of a block
  const int64_t batch = x.size(0), channels = x.size(1), steps = x.size(2), outs = w.size(0), taps = w.size(2);
  const int64_t out_blocks = (outs + kBlockO - 1) / kBlockO;
  const int64_t chunk = chunk_steps<T>(channels, span), chunks = (steps + chunk - 1) / chunk;
  std::vector<T> packed(out_blocks * channels * taps * kBlockO, T(0));  // zeros for a last block's missing channels
  const T* weights = w.data_ptr<T>();
  for (int64_t o = 0; o < outs; ++o)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t j = 0; j < taps; ++j)
        packed[((o / kBlockO * channels + c) * taps + j) * kBlockO + o % kBlockO] = weights[(o * channels + c) * taps + j];
  Tensor y = at::empty({batch, outs, steps}, x.options());
  const T* xs = x.data_ptr<T>();
  T* ys = y.data_ptr<T>();
  const int64_t window_row = span + taps - 1;
  const int64_t grain = std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, kBlockO * channels * taps * chunk));
  // tasks (sample, chunk, block of output channels), the blocks innermost: they read the same part of x
  at::parallel_for(0, batch * chunks * out_blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> window(channels * window_row), out(kBlockO * span);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (chunks * out_blocks), part = task / out_blocks % chunks, block = task % out_blocks;
      const T* xb = xs + b * channels * steps;
      const int64_t o0 = block * kBlockO, valid_o = std::min<int64_t>(kBlockO, outs - o0);
      for (int64_t t0 = part * chunk; t0 < std::min(steps, (part + 1) * chunk); t0 += span) {
        const int64_t first = t0 - pad;  // x's step under tap 0 of output t0
        const T* base = xb + first;
        int64_t row = steps;
        if (first < 0 || first + window_row > steps) {  // the block's taps reach outside x: read a padded window
          for (int64_t c = 0; c < channels; ++c)
            for (int64_t s = 0; s < window_row; ++s) {
              const int64_t t = first + s;
              window[c * window_row + s] = t >= 0 && t < steps ? xb[c * steps + t] : T(0);
            }
          base = window.data();
          row = window_row;
        }
        correlate_block(base, row, packed.data() + block * channels * taps * kBlockO, channels, taps, out.data());
        const int64_t valid_t = std::min(span, steps - t0);
        for (int64_t i = 0; i < valid_o; ++i)
          std::memcpy(ys + (b * outs + o0 + i) * steps + t0, out.data() + i * span, valid_t * sizeof(T));
      }
    }
  });
  return y;
}

// ---- grad_weight -----------------------------------------------------------------------------------------------

// partial[i taps + jj] += sum_t dy[i, t] x[t + shift + jj] (lanes to be summed), for i < GO, jj < GJ, over the
// steps t_begin .. t_end - 1 of one sample (dy's rows and x of `steps`, x zero outside them); shift = j0 - pad for
// taps from j0
template <typename T, int GO, int GJ>
void grad_weight_block(const T* dy, const T* x, int64_t steps, int64_t shift, int64_t t_begin, int64_t t_end,
                       typename Lanes<T>::Vector* partial, int64_t taps) {
  using Vector = typename Lanes<T>::Vector;
  constexpr int lanes = Lanes<T>::kCount;
  // vectors of steps whose taps all read x: from `first` on, ending by `last`
  const int64_t first = std::max(t_begin, -shift), last = std::min(t_end, steps - shift - (GJ - 1));
  Vector acc[GO][GJ] = {};
  int64_t t = first;
  for (; t + lanes <= last; t += lanes) {
    Vector grads[GO];
    for (int i = 0; i < GO; ++i) grads[i] = load(dy + i * steps + t);
    for (int jj = 0; jj < GJ; ++jj) {
      Vector values = load(x + t + shift + jj);
      in_register(values);
      for (int i = 0; i < GO; ++i) acc[i][jj] += grads[i] * values;
    }
  }
  for (int i = 0; i < GO; ++i)
    for (int jj = 0; jj < GJ; ++jj) partial[i * taps + jj] += acc[i][jj];
  // the steps left, one at a time: before `first` (those before it by GJ or more read only zeros), and after the
  // vectors (up to the last that reads x); summed apart, so that the vector sums above stay in registers
  T sums[GO][GJ] = {};
  const auto one_at_a_time = [&](int64_t from, int64_t to) {
    for (int64_t s = from; s < to; ++s)
      for (int jj = 0; jj < GJ; ++jj) {
        const int64_t at = s + shift + jj;
        if (at >= 0 && at < steps)
          for (int i = 0; i < GO; ++i) sums[i][jj] += dy[i * steps + s] * x[at];
      }
  };
  one_at_a_time(std::max(t_begin, -shift - (GJ - 1)), std::min(first, t_end));
  one_at_a_time(std::max(t, t_begin), std::min(t_end, steps - shift));
  for (int i = 0; i < GO; ++i)
    for (int jj = 0; jj < GJ; ++jj) partial[i * taps + jj][0] += sums[i][jj];
}

template <typename T, int GO>
void grad_weight_taps(const T* dy, const T* x, int64_t steps, int64_t pad, int64_t taps, int64_t t_begin,
                      int64_t t_end, typename Lanes<T>::Vector* partial) {
  int64_t j0 = 0;
  for (; j0 + kGradJ <= taps; j0 += kGradJ)
    grad_weight_block<T, GO, kGradJ>(dy, x, steps, j0 - pad, t_begin, t_end, partial + j0, taps);
  for (; j0 < taps; ++j0)
    grad_weight_block<T, GO, 1>(dy, x, steps, j0 - pad, t_begin, t_end, partial + j0, taps);
}

template <typename T>
Tensor grad_weight_typed(const Tensor& grad_y, const Tensor& x, int64_t taps, int64_t pad) {
  using Vector = typename Lanes<T>::Vector;
  const int64_t batch = x.size(0), channels = x.size(1), steps = x.size(2), outs = grad_y.size(1);
  const int64_t out_blocks = (outs + kGradO - 1) / kGradO;
  const int64_t chunk = chunk_steps<T>(channels + outs, Lanes<T>::kCount), chunks = (steps + chunk - 1) / chunk;
  Tensor dw = at::empty({outs, channels, taps}, x.options());
  const T *dys = grad_y.data_ptr<T>(), *xs = x.data_ptr<T>();
  T* dws = dw.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, kGradO * taps * steps * batch));
  // tasks (block of output channels, input channel); each thread walks the samples and their chunks outermost, so
  // that its tasks read a chunk of x and dy while it is in L2, and sums in vectors until the end
  at::parallel_for(0, out_blocks * channels, grain, [&](int64_t begin, int64_t end) {
    std::vector<Vector> partials((end - begin) * kGradO * taps, Vector{});
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t part = 0; part < chunks; ++part) {
        const int64_t t_begin = part * chunk, t_end = std::min(steps, t_begin + chunk);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t o0 = task / channels * kGradO, c = task % channels;
          const T* dy = dys + (b * outs + o0) * steps;
          const T* xc = xs + (b * channels + c) * steps;
          Vector* partial = partials.data() + (task - begin) * kGradO * taps;
          if (outs - o0 >= kGradO)
            grad_weight_taps<T, kGradO>(dy, xc, steps, pad, taps, t_begin, t_end, partial);
          else
            grad_weight_taps<T, 1>(dy, xc, steps, pad, taps, t_begin, t_end, partial);
        }
      }
    for (int64_t task = begin; task < end; ++task) {
      const int64_t o0 = task / channels * kGradO, c = task % channels;
      for (int64_t i = 0; i < std::min<int64_t>(kGradO, outs - o0); ++i)
        for (int64_t j = 0; j < taps; ++j)
          dws[((o0 + i) * channels + c) * taps + j] = horizontal_sum<T>(partials[((task - begin) * kGradO + i) * taps + j]);
    }
  });
  return dw;
}

// ---- entry points --------------------------------------------------------------------------------------------

void check(const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "the direct 1-D convolution takes CPU tensors");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() &&
                  (a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble),
              "the direct 1-D convolution takes float32 or float64 tensors alike, got ", a.scalar_type(), " and ",
              b.scalar_type());
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.is_contiguous() && b.is_contiguous(),
              "the direct 1-D convolution takes contiguous ", a_name, " and ", b_name, " of 3 dimensions, got ",
              a.sizes(), " and ", b.sizes());
}

Tensor correlate(const Tensor& x, const Tensor& w, int64_t pad) {
  check(x, "x [B, C, T]", w, "w [O, C, K]");
  TORCH_CHECK(x.size(1) == w.size(1) && 0 <= pad && pad < w.size(2), "correlate takes x [B, C, T], w [O, C, K] and ",
              "0 <= pad < K, got ", x.sizes(), ", ", w.sizes(), " and pad ", pad);
  if (x.numel() == 0 || w.numel() == 0) return at::zeros({x.size(0), w.size(0), x.size(2)}, x.options());
  return x.scalar_type() == at::kFloat ? correlate_typed<float>(x, w, pad) : correlate_typed<double>(x, w, pad);
}

Tensor grad_weight(const Tensor& grad_y, const Tensor& x, int64_t taps, int64_t pad) {
  check(grad_y, "dy [B, O, T]", x, "x [B, C, T]");
  TORCH_CHECK(grad_y.size(0) == x.size(0) && grad_y.size(2) == x.size(2) && 0 <= pad && pad < taps,
              "grad_weight takes dy [B, O, T], x [B, C, T] and 0 <= pad < taps, got ", grad_y.sizes(), ", ",
              x.sizes(), ", pad ", pad, " and ", taps, " taps");
  if (x.numel() == 0 || grad_y.numel() == 0) return at::zeros({grad_y.size(1), x.size(1), taps}, x.options());
  return x.scalar_type() == at::kFloat ? grad_weight_typed<float>(grad_y, x, taps, pad)
                                       : grad_weight_typed<double>(grad_y, x, taps, pad);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using pybind11::arg;
  m.def("correlate", &correlate, "y[b, o, t] = sum_c sum_j w[o, c, j] x[b, c, t - pad + j]", arg("x"), arg("w"),
        arg("pad"));
  m.def("grad_weight", &grad_weight, "dw[o, c, j] = sum_b sum_t dy[b, o, t] x[b, c, t - pad + j]", arg("grad_y"),
        arg("x"), arg("taps"), arg("pad"));
}
