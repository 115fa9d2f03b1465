// Two batch norms in training mode summed, a ReLU after where asked: the parallel kernels' pair of the sequence and
// CIFAR-10 models (smpconv_models/ops/batch_norms.py), y = relu(bn_a(a) + bn_c(c)), a and c [B, C, L] contiguous
// float32 (L the positions, 1-D or 2-D). PyTorch's CPU batch norm sums a channels-first batch one element at a time
// in float64, and the sum and the ReLU are passes of their own: the pair's forward pass read its inputs' memory
// seven times and wrote it four. Here each pass below reads the memory it needs once:
//
//   moments:         per channel, the mean and the biased variance of x: each row's mean, then its squared
//                    deviations from it (the row, a few KB, stays in L1 for that second pass), rows combined
//   scale_shift_sum: y = a scale_a + c scale_c + shift per channel, the ReLU applied where asked
//   grad_sums:       per channel, the sums of d, d (a - mean_a) and d (c - mean_c) (float64), d = dy where the
//                    ReLU passed the sum, else 0 (no ReLU: dy)
//   grad_inputs:     da = p_a d + q_a a + r_a, dc = p_c d + q_c c + r_c per channel
//
// The backward passes recompute the sum from a and c, which they read anyway, for the ReLU's mask, rather than read
// y. Sums are float32 vectors over blocks of kSumBlock elements, the blocks' sums added in float64 (PyTorch's batch
// norm sums in float64, serially; float64 vectors left GCC's loops of several sums scalar, 7x slower). Rows are split
// between threads, and each channel's total is taken over its rows in one order: results do not depend on the number
// of threads.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;

// elements per parallel task at least (whole rows): fewer cost more to schedule than they save
constexpr int64_t kMinTaskElements = 1 << 14;
// elements summed in float32 before their sum is added in float64
constexpr int64_t kSumBlock = 256;

struct Shape {
  int64_t batch, channels, length;
};

Shape shape_of(const Tensor& x) {
  return {x.size(0), x.size(1), x.numel() / std::max<int64_t>(1, x.size(0) * x.size(1))};
}

void check_input(const Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() >= 3, name,
              " must be a contiguous float32 CPU tensor [B, C, ...]");
}

void check_like(const Tensor& x, const Tensor& like, const char* name) {
  check_input(x, name);
  TORCH_CHECK(x.sizes() == like.sizes(), name, " must have a's shape");
}

// The `count` values of v: a few per channel.
const float* values(const Tensor& v, int64_t count, const char* name) {
  TORCH_CHECK(v.device().is_cpu() && v.scalar_type() == at::kFloat && v.is_contiguous() && v.numel() == count, name,
              " must be a contiguous float32 CPU tensor of ", count, " values");
  return v.data_ptr<float>();
}

// Mean and sum of squared deviations of n values, merged with another's (Chan et al.'s pairwise update).
struct Moments {
  double count = 0, mean = 0, m2 = 0;

  void merge(double n, double row_mean, double row_m2) {
    const double total = count + n, delta = row_mean - mean;
    mean += delta * n / total;
    m2 += row_m2 + delta * delta * count * n / total;
    count = total;
  }
};

// body(begin, end) for each block of kSumBlock elements of n, in order.
template <typename Body>
void in_blocks(int64_t n, const Body& body) {
  for (int64_t begin = 0; begin < n; begin += kSumBlock) body(begin, std::min(n, begin + kSumBlock));
}

// body(r) for each row r = b C + c, the rows split between threads in memory order.
template <typename Body>
void for_each_row(const Shape& s, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, kMinTaskElements / std::max<int64_t>(1, s.length));
  at::parallel_for(0, s.batch * s.channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) body(r);
  });
}

// Each row's `kSums` sums, [B C, kSums]: row_sums(r, out) adds row r's to out (zeros at first).
template <int kSums, typename RowSums>
std::vector<double> rows_sums(const Shape& s, const RowSums& row_sums) {
  std::vector<double> sums(s.batch * s.channels * kSums);
  for_each_row(s, [&](int64_t r) { row_sums(r, sums.data() + r * kSums); });
  return sums;
}

std::tuple<Tensor, Tensor> moments(const Tensor& x) {
  check_input(x, "x");
  const Shape s = shape_of(x);
  TORCH_CHECK(s.batch * s.length > 0, "moments need at least one value per channel");
  const float* data = x.data_ptr<float>();
  // each row's mean and sum of squared deviations
  const std::vector<double> rows = rows_sums<2>(s, [&](int64_t r, double* out) {
    const float* row = data + r * s.length;
    double sum = 0;
    in_blocks(s.length, [&](int64_t begin, int64_t end) {
      float block = 0;
#pragma omp simd reduction(+ : block)
      for (int64_t i = begin; i < end; ++i) block += row[i];
      sum += block;
    });
    const double row_mean = sum / s.length;
    // squared deviations from the float32 nearest the mean, corrected for its distance from the mean
    const float center = row_mean;
    double squares = 0;
    in_blocks(s.length, [&](int64_t begin, int64_t end) {
      float block = 0;
#pragma omp simd reduction(+ : block)
      for (int64_t i = begin; i < end; ++i) block += (row[i] - center) * (row[i] - center);
      squares += block;
    });
    out[0] = row_mean;
    out[1] = squares - s.length * (row_mean - center) * (row_mean - center);
  });
  Tensor mean = at::empty({s.channels}, x.options().dtype(at::kDouble));
  Tensor var = at::empty({s.channels}, x.options().dtype(at::kDouble));
  double *means = mean.data_ptr<double>(), *vars = var.data_ptr<double>();
  for (int64_t c = 0; c < s.channels; ++c) {
    Moments channel;
    for (int64_t b = 0; b < s.batch; ++b) {
      const double* row = rows.data() + (b * s.channels + c) * 2;
      channel.merge(s.length, row[0], row[1]);
    }
    means[c] = channel.mean;
    vars[c] = channel.m2 / channel.count;
  }
  return {mean, var};
}

// The sum before the ReLU: one expression for the forward pass and for the backward passes' mask, its rounding
// spelled out (fused multiply-adds) so that no loop's compilation contracts it differently.
inline float summed(float a, float c, float scale_a, float scale_c, float shift) {
  return std::fma(a, scale_a, std::fma(c, scale_c, shift));
}

// The gradient at the sum: dy where the ReLU passed it (PyTorch's ReLU backward: zero where its output y <= 0).
template <bool kRelu>
inline float passed(float dy, float sum) {
  return kRelu && sum <= 0.f ? 0.f : dy;
}

// body(std::true_type) with a ReLU, body(std::false_type) without: loops compiled for each (GCC leaves a reduction
// with the run-time flag's condition in it unvectorised).
template <typename Body>
void with_relu(bool relu, const Body& body) {
  if (relu) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// The pair's inputs a and c, checked alike, their shape, and the forward pass's per-channel affine map [3, C]:
// scale_a, scale_c, shift.
struct Pair {
  Shape s;
  const float *a, *c, *scale_a, *scale_c, *shift;

  Pair(const Tensor& a_tensor, const Tensor& c_tensor, const Tensor& affine) {
    check_input(a_tensor, "a");
    check_like(c_tensor, a_tensor, "c");
    s = shape_of(a_tensor);
    a = a_tensor.data_ptr<float>();
    c = c_tensor.data_ptr<float>();
    scale_a = values(affine, 3 * s.channels, "affine");
    scale_c = scale_a + s.channels;
    shift = scale_c + s.channels;
  }
};

Tensor scale_shift_sum(const Tensor& a, const Tensor& c, const Tensor& affine, bool relu) {
  const Pair p(a, c, affine);
  const Shape& s = p.s;
  Tensor y = at::empty_like(a);
  float* py = y.data_ptr<float>();
  for_each_row(s, [&](int64_t r) {
    const int64_t ch = r % s.channels, offset = r * s.length;
    const float ka = p.scale_a[ch], kc = p.scale_c[ch], k0 = p.shift[ch];
    const float *ra = p.a + offset, *rc = p.c + offset;
    float* ry = py + offset;
    with_relu(relu, [&](auto with) {
#pragma omp simd
      for (int64_t i = 0; i < s.length; ++i) {
        const float sum = summed(ra[i], rc[i], ka, kc, k0);
        ry[i] = with ? std::max(sum, 0.f) : sum;
      }
    });
  });
  return y;
}

Tensor grad_sums(const Tensor& grad_y, const Tensor& a, const Tensor& c, const Tensor& affine, const Tensor& means,
                 bool relu) {
  const Pair p(a, c, affine);
  const Shape& s = p.s;
  check_like(grad_y, a, "grad_y");
  const float* mean_a = values(means, 2 * s.channels, "means");
  const float* mean_c = mean_a + s.channels;
  const float* pg = grad_y.data_ptr<float>();
  const std::vector<double> rows = rows_sums<3>(s, [&](int64_t r, double* out) {
    const int64_t ch = r % s.channels, offset = r * s.length;
    const float ka = p.scale_a[ch], kc = p.scale_c[ch], k0 = p.shift[ch], center_a = mean_a[ch],
                center_c = mean_c[ch];
    const float *rg = pg + offset, *ra = p.a + offset, *rc = p.c + offset;
    with_relu(relu, [&](auto with) {
      in_blocks(s.length, [&](int64_t begin, int64_t end) {
        float sum = 0, sum_a = 0, sum_c = 0;
#pragma omp simd reduction(+ : sum, sum_a, sum_c)
        for (int64_t i = begin; i < end; ++i) {
          const float d = passed<with>(rg[i], summed(ra[i], rc[i], ka, kc, k0));
          sum += d;
          sum_a += d * (ra[i] - center_a);
          sum_c += d * (rc[i] - center_c);
        }
        out[0] += sum;
        out[1] += sum_a;
        out[2] += sum_c;
      });
    });
  });
  // [3, C]: the sums of d, d (a - mean_a), d (c - mean_c)
  Tensor sums = at::zeros({3, s.channels}, a.options().dtype(at::kDouble));
  double* out = sums.data_ptr<double>();
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t ch = 0; ch < s.channels; ++ch)
      for (int j = 0; j < 3; ++j) out[j * s.channels + ch] += rows[(b * s.channels + ch) * 3 + j];
  return sums;
}

std::tuple<Tensor, Tensor> grad_inputs(const Tensor& grad_y, const Tensor& a, const Tensor& c, const Tensor& affine,
                                       const Tensor& coefficients, bool relu) {
  const Pair p(a, c, affine);
  const Shape& s = p.s;
  check_like(grad_y, a, "grad_y");
  // [6, C]: p_a, q_a, r_a, p_c, q_c, r_c of da = p_a d + q_a a + r_a and dc = p_c d + q_c c + r_c
  const float* kg = values(coefficients, 6 * s.channels, "coefficients");
  Tensor grad_a = at::empty_like(a), grad_c = at::empty_like(c);
  const float* pg = grad_y.data_ptr<float>();
  float *pga = grad_a.data_ptr<float>(), *pgc = grad_c.data_ptr<float>();
  for_each_row(s, [&](int64_t r) {
    const int64_t ch = r % s.channels, offset = r * s.length, n = s.channels;
    const float ka = p.scale_a[ch], kc = p.scale_c[ch], k0 = p.shift[ch];
    const float p_a = kg[ch], q_a = kg[n + ch], r_a = kg[2 * n + ch];
    const float p_c = kg[3 * n + ch], q_c = kg[4 * n + ch], r_c = kg[5 * n + ch];
    const float *rg = pg + offset, *ra = p.a + offset, *rc = p.c + offset;
    float *ga = pga + offset, *gc = pgc + offset;
    with_relu(relu, [&](auto with) {
#pragma omp simd
      for (int64_t i = 0; i < s.length; ++i) {
        const float d = passed<with>(rg[i], summed(ra[i], rc[i], ka, kc, k0));
        ga[i] = p_a * d + q_a * ra[i] + r_a;
        gc[i] = p_c * d + q_c * rc[i] + r_c;
      }
    });
  });
  return {grad_a, grad_c};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using pybind11::arg;
  m.def("moments", &moments, "per channel, the mean and the biased variance (float64)", arg("x"));
  m.def("scale_shift_sum", &scale_shift_sum,
        "a scale_a + c scale_c + shift per channel (affine [3, C]), a ReLU after where asked", arg("a"), arg("c"),
        arg("affine"), arg("relu"));
  m.def("grad_sums", &grad_sums, "[3, C] (float64): per channel, the sums of d, d (a - mean_a), d (c - mean_c)",
        arg("grad_y"), arg("a"), arg("c"), arg("affine"), arg("means"), arg("relu"));
  m.def("grad_inputs", &grad_inputs, "da = p_a d + q_a a + r_a, dc likewise (coefficients [6, C])", arg("grad_y"),
        arg("a"), arg("c"), arg("affine"), arg("coefficients"), arg("relu"));
}
