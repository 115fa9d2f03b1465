// The real FFTs of the long convolution's FFT backend on CPUs (smpconv_models/ops/fft_cpu.py), 2-D and 1-D:
//
//   rfft:    X[m, f0, f1] = sum_{r < N0, c < N1} x[m, r, c] exp(-2 pi i (f0 r / P0 + f1 c / P1)),  f1 <= P1 / 2
//   irfft:   y[m, r, c]   = the sample (r, c) of torch.fft.irfftn(X[m], s=(P0, P1)),  r < N0, c < N1
//
// x zero-padded to the period P0 x P1 and the inverse cropped to N0 x N1, as the convolution wants them; 1-D signals
// are those of one row on a period of 1 x P1. PyTorch's rfftn and irfftn (MKL) spend more time copying the spectra
// between layouts than transforming them at the CIFAR-10 model's small periods (a [64, 48, 36, 19] irfftn: 9 of its
// 19 ms in two transposing copies, on a 2-core EPYC), and its 1-D transforms need x padded and the inverse cropped
// by copies of their own. Here each thread takes groups of kLanes signals and transforms them together, one signal
// per lane of a vector: every butterfly is a full vector operation with no shuffles, the signals are read and
// written once each in their own layout, and everything in between (the group's rows, spectra and transforms)
// stays in the caches.
//
// The transforms of rows are mixed-radix Stockham FFTs (radices 4, 2, 3, 5; others by their plain DFT), decimation
// in time, each stage reading one buffer and writing the other in sorted order. The rows are real: two rows go
// through one complex transform as its real and imaginary parts and are separated after it (forward), or combined
// before it (inverse); 1-D signals are paired so, two to a lane. The inverse takes, as irfftn does, the column
// transforms first and the real parts of the frequencies 0 and P1 / 2 (even P1) of the last axis.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

using at::Tensor;

// signals transformed together, one per lane of an AVX vector of floats (GCC splits it where vectors are narrower)
constexpr int kLanes = 8;
// vector operations per parallel task at least: fewer cost more to schedule than they save
constexpr int64_t kMinTaskWork = 1 << 14;

typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

// Copied member by member: as a block of memory GCC moves it in 16-byte pieces (its tuning for Zen), and reading
// those back as 32-byte vectors stalls on every store
struct Cvec {
  Vec re, im;
  Cvec() : re{}, im{} {}
  Cvec(Vec re_, Vec im_) : re(re_), im(im_) {}
  Cvec(const Cvec& other) : re(other.re), im(other.im) {}
  Cvec& operator=(const Cvec& other) {
    re = other.re;
    im = other.im;
    return *this;
  }
};

inline Cvec operator+(Cvec a, Cvec b) { return {a.re + b.re, a.im + b.im}; }
inline Cvec operator-(Cvec a, Cvec b) { return {a.re - b.re, a.im - b.im}; }
inline Cvec scaled(Cvec a, float s) { return {a.re * s, a.im * s}; }
// i s a, s = +-1
inline Cvec times_i(Cvec a, float s) { return {-s * a.im, s * a.re}; }
inline Cvec times(Cvec a, std::complex<float> w) {
  return {a.re * w.real() - a.im * w.imag(), a.re * w.imag() + a.im * w.real()};
}

// One stage of a Stockham FFT of length n: `span` (L) points of each sub-transform done, radix r combines r of them.
// Output p of butterfly (j, k) is element (j + L p) m + k, its input q element j (n / L) + k + q m, m = n / (L r).
struct Stage {
  int radix, span;
  std::vector<std::complex<float>> twiddles;  // [L][r]: exp(sign 2 pi i q j / (L r))
  std::vector<std::complex<float>> roots;     // [r]: exp(sign 2 pi i q / r), for radices without their own butterfly
};

// The length-r DFT of v, in place, sign the exponent's
template <int R>
void butterfly(Cvec* v, float sign);

template <>
void butterfly<2>(Cvec* v, float) {
  const Cvec a = v[0], b = v[1];
  v[0] = a + b;
  v[1] = a - b;
}

template <>
void butterfly<3>(Cvec* v, float sign) {
  const float half_sqrt3 = 0.866025403784438647f;
  const Cvec t = v[1] + v[2], u = times_i(scaled(v[1] - v[2], half_sqrt3), sign);
  const Cvec base = v[0] - scaled(t, 0.5f);
  v[0] = v[0] + t;
  v[1] = base + u;
  v[2] = base - u;
}

template <>
void butterfly<4>(Cvec* v, float sign) {
  const Cvec t0 = v[0] + v[2], t1 = v[0] - v[2], t2 = v[1] + v[3], t3 = times_i(v[1] - v[3], sign);
  v[0] = t0 + t2;
  v[1] = t1 + t3;
  v[2] = t0 - t2;
  v[3] = t1 - t3;
}

template <>
void butterfly<5>(Cvec* v, float sign) {
  const float c1 = 0.309016994374947424f, c2 = -0.809016994374947424f;  // cos(2 pi / 5), cos(4 pi / 5)
  const float s1 = 0.951056516295153572f, s2 = 0.587785252292473129f;   // sin(2 pi / 5), sin(4 pi / 5)
  const Cvec t1 = v[1] + v[4], t2 = v[2] + v[3], u1 = v[1] - v[4], u2 = v[2] - v[3];
  const Cvec base1 = v[0] + scaled(t1, c1) + scaled(t2, c2), base2 = v[0] + scaled(t1, c2) + scaled(t2, c1);
  const Cvec rot1 = times_i(scaled(u1, s1) + scaled(u2, s2), sign);
  const Cvec rot2 = times_i(scaled(u1, s2) - scaled(u2, s1), sign);
  v[0] = v[0] + t1 + t2;
  v[1] = base1 + rot1;
  v[4] = base1 - rot1;
  v[2] = base2 + rot2;
  v[3] = base2 - rot2;
}

// any other radix: the plain DFT of in [r] into out [r], r^2 products
void plain_dft(const Cvec* in, int radix, const std::complex<float>* roots, Cvec* out) {
  for (int p = 0; p < radix; ++p) {
    Cvec sum = in[0];
    for (int q = 1; q < radix; ++q) sum = sum + times(in[q], roots[(p * q) % radix]);
    out[p] = sum;
  }
}

template <int R>
void run_stage(const Stage& stage, int n, float sign, const Cvec* in, Cvec* out) {
  const int span = stage.span, m = n / (span * R);
  for (int j = 0; j < span; ++j) {
    const std::complex<float>* twiddles = stage.twiddles.data() + j * R;
    for (int k = 0; k < m; ++k) {
      Cvec v[R];
      v[0] = in[j * (n / span) + k];
      for (int q = 1; q < R; ++q) v[q] = times(in[j * (n / span) + k + q * m], twiddles[q]);
      butterfly<R>(v, sign);
      for (int p = 0; p < R; ++p) out[(j + span * p) * m + k] = v[p];
    }
  }
}

void run_plain_stage(const Stage& stage, int n, const Cvec* in, Cvec* out) {
  const int span = stage.span, radix = stage.radix, m = n / (span * radix);
  std::vector<Cvec> v(radix), dft(radix);
  for (int j = 0; j < span; ++j) {
    const std::complex<float>* twiddles = stage.twiddles.data() + j * radix;
    for (int k = 0; k < m; ++k) {
      for (int q = 0; q < radix; ++q) v[q] = times(in[j * (n / span) + k + q * m], twiddles[q]);
      plain_dft(v.data(), radix, stage.roots.data(), dft.data());
      for (int p = 0; p < radix; ++p) out[(j + span * p) * m + k] = dft[p];
    }
  }
}

// A complex FFT of one length and direction (sign -1 forward, +1 inverse, unscaled)
class Plan {
 public:
  Plan(int n, float sign) : n_(n), sign_(sign) {
    int rest = n, span = 1;
    while (rest > 1) {
      const int radix = rest % 4 == 0   ? 4
                        : rest % 2 == 0 ? 2
                        : rest % 3 == 0 ? 3
                        : rest % 5 == 0 ? 5
                                        : smallest_factor(rest);
      Stage stage{radix, span, {}, {}};
      for (int j = 0; j < span; ++j)
        for (int q = 0; q < radix; ++q) stage.twiddles.push_back(root(int64_t(q) * j, int64_t(span) * radix));
      for (int q = 0; q < radix; ++q) stage.roots.push_back(root(q, radix));
      stages_.push_back(std::move(stage));
      rest /= radix;
      span *= radix;
    }
  }

  // Transforms data [n] in place, scratch [n] its partner buffer
  void run(Cvec* data, Cvec* scratch) const {
    Cvec *in = data, *out = scratch;
    for (const Stage& stage : stages_) {
      switch (stage.radix) {
        case 2: run_stage<2>(stage, n_, sign_, in, out); break;
        case 3: run_stage<3>(stage, n_, sign_, in, out); break;
        case 4: run_stage<4>(stage, n_, sign_, in, out); break;
        case 5: run_stage<5>(stage, n_, sign_, in, out); break;
        default: run_plain_stage(stage, n_, in, out);
      }
      std::swap(in, out);
    }
    if (in != data) std::copy(in, in + n_, data);
  }

 private:
  static int smallest_factor(int n) {
    for (int f = 2; f * f <= n; ++f)
      if (n % f == 0) return f;
    return n;
  }

  // exp(sign 2 pi i a / b), a reduced modulo b first: the angle stays accurate
  std::complex<float> root(int64_t a, int64_t b) const {
    const double angle = sign_ * 2 * M_PI * double(a % b) / double(b);
    return {float(std::cos(angle)), float(std::sin(angle))};
  }

  int n_;
  float sign_;
  std::vector<Stage> stages_;
};

struct Shape {
  int64_t signals, rows, cols, period0, period1;  // M, N0, N1, P0, P1
  int64_t half() const { return period1 / 2 + 1; }  // F1
  // 1-D signals (a period of one row) have no column transforms, and a lane takes two of them as its two rows: one
  // complex transform for both, where one alone would leave its imaginary parts zeros
  bool paired() const { return period0 == 1; }
  int64_t per_lane() const { return paired() ? 2 : 1; }  // signals
  int64_t lane_rows() const { return per_lane() * rows; }
  int64_t lanes() const { return (signals + per_lane() - 1) / per_lane(); }
};

// Per thread: a lane's real rows [lane rows][N1], spectra [max(lane rows, P0)][F1] and a transform's two buffers
struct Workspace {
  std::vector<Vec> rows;
  std::vector<Cvec> spectra, line, scratch;
  explicit Workspace(const Shape& s)
      : rows(s.lane_rows() * s.cols),
        spectra(std::max(s.lane_rows(), s.period0) * s.half()),
        line(std::max(s.period0, s.period1)),
        scratch(std::max(s.period0, s.period1)) {}
};

// ---- between the signals' layout and the lanes ------------------------------------------------------------------

// The 8 x 8 block v[i][j] -> v[j][i]. Writing single lanes of vectors in memory instead stalls on every store.
inline void transpose(Vec* v) {
#if defined(__AVX__)
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(__m256(v[i]), __m256(v[i + 1]));
    t[i + 1] = _mm256_unpackhi_ps(__m256(v[i]), __m256(v[i + 1]));
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = Vec(_mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    v[i + 4] = Vec(_mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
#else
  float t[kLanes][kLanes];
  for (int i = 0; i < kLanes; ++i)
    for (int j = 0; j < kLanes; ++j) t[j][i] = v[i][j];
  std::memcpy(v, t, sizeof t);
#endif
}
static_assert(kLanes == 8, "transpose takes 8 x 8 blocks");

// out[i][l] = sources[l][i] for i < count; lanes without a source (nullptr) zero
void gather(const float* const* sources, int64_t count, Vec* out) {
  Vec block[kLanes];
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      block[l] = Vec{};
      if (sources[l]) std::memcpy(&block[l], sources[l] + i, sizeof(Vec));
    }
    transpose(block);
    std::copy(block, block + kLanes, out + i);
  }
  if (i == count) return;
  for (int l = 0; l < kLanes; ++l) {
    block[l] = Vec{};
    for (int64_t j = i; sources[l] && j < count; ++j) block[l][j - i] = sources[l][j];
  }
  transpose(block);
  std::copy(block, block + (count - i), out + i);
}

// targets[l][i] = in[i][l] for i < count and the lanes with a target
void scatter(const Vec* in, int64_t count, float* const* targets) {
  Vec block[kLanes];
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    std::copy(in + i, in + i + kLanes, block);
    transpose(block);
    for (int l = 0; l < kLanes; ++l)
      if (targets[l]) std::memcpy(targets[l] + i, &block[l], sizeof(Vec));
  }
  if (i == count) return;
  std::copy(in + i, in + count, block);
  std::fill(block + (count - i), block + kLanes, Vec{});
  transpose(block);
  for (int l = 0; l < kLanes; ++l)
    for (int64_t j = i; targets[l] && j < count; ++j) targets[l][j] = block[l][j - i];
}

// The signals `index` (< per lane) of the group's lanes from lane m0 on, `base`'s signals `stride` floats apart:
// nullptr past the last (and past the last lane, `lanes`)
template <typename T>
void lane_signals(T* base, int64_t stride, const Shape& s, int64_t m0, int lanes, int64_t index, T** signals) {
  for (int l = 0; l < kLanes; ++l) {
    const int64_t signal = (m0 + l) * s.per_lane() + index;
    signals[l] = l < lanes && signal < s.signals ? base + signal * stride : nullptr;
  }
}

void rfft_group(const float* x, float* out, const Shape& s, const Plan& row_plan, const Plan& column_plan,
                int64_t m0, int lanes, Workspace& w) {
  const int64_t half = s.half(), p1 = s.period1, signal = s.rows * s.cols;
  const float* signals[kLanes];
  for (int64_t i = 0; i < s.per_lane(); ++i) {
    lane_signals(x, signal, s, m0, lanes, i, signals);
    gather(signals, signal, w.rows.data() + i * signal);
  }
  // rows r and r + 1 as one complex signal z = x_r + i x_{r+1}; then X_r[k] = (Z[k] + conj Z[-k]) / 2 and
  // X_{r+1}[k] = (Z[k] - conj Z[-k]) / 2i
  for (int64_t r = 0; r < s.lane_rows(); r += 2) {
    const bool pair = r + 1 < s.lane_rows();
    for (int64_t c = 0; c < p1; ++c) {
      const bool inside = c < s.cols;
      w.line[c] = {inside ? w.rows[r * s.cols + c] : Vec{}, inside && pair ? w.rows[(r + 1) * s.cols + c] : Vec{}};
    }
    row_plan.run(w.line.data(), w.scratch.data());
    for (int64_t k = 0; k < half; ++k) {
      const Cvec z = w.line[k], mirror = w.line[(p1 - k) % p1];
      w.spectra[r * half + k] = {(z.re + mirror.re) * 0.5f, (z.im - mirror.im) * 0.5f};
      if (pair) w.spectra[(r + 1) * half + k] = {(z.im + mirror.im) * 0.5f, (mirror.re - z.re) * 0.5f};
    }
  }
  // the column transforms, their P0 outputs over the N0 rows (column k over column k: in place)
  const int64_t plane = s.period0 * half;
  for (int64_t k = 0; !s.paired() && k < half; ++k) {
    for (int64_t r = 0; r < s.period0; ++r) w.line[r] = r < s.rows ? w.spectra[r * half + k] : Cvec{};
    column_plan.run(w.line.data(), w.scratch.data());
    for (int64_t f0 = 0; f0 < s.period0; ++f0) w.spectra[f0 * half + k] = w.line[f0];
  }
  float* targets[kLanes];
  for (int64_t i = 0; i < s.per_lane(); ++i) {
    lane_signals(out, 2 * plane, s, m0, lanes, i, targets);
    scatter(&w.spectra[i * plane].re, 2 * plane, targets);  // a Cvec is its re and im vectors: interleaved
  }
}

void irfft_group(const float* spectra, int64_t spectra_row, float* y, const Shape& s, const Plan& row_plan,
                 const Plan& column_plan, int64_t m0, int lanes, Workspace& w) {
  const int64_t half = s.half(), p1 = s.period1, plane = s.period0 * half, signal = s.rows * s.cols;
  const float scale = 1.f / float(s.period0 * s.period1);
  const float* signals[kLanes];
  for (int64_t i = 0; i < s.per_lane(); ++i) {
    lane_signals(spectra, 2 * spectra_row, s, m0, lanes, i, signals);
    gather(signals, 2 * plane, &w.spectra[i * plane].re);
  }
  // the column transforms, only the first N0 of their P0 outputs kept (row r over row r: in place)
  for (int64_t k = 0; !s.paired() && k < half; ++k) {
    for (int64_t f0 = 0; f0 < s.period0; ++f0) w.line[f0] = w.spectra[f0 * half + k];
    column_plan.run(w.line.data(), w.scratch.data());
    for (int64_t r = 0; r < s.rows; ++r) w.spectra[r * half + k] = w.line[r];
  }
  // rows r and r + 1: Z = A + i B, A and B their Hermitian spectra over the whole period (the imaginary parts of
  // the frequencies 0 and P1 / 2 dropped, as c2r transforms do); then x_r = Re z, x_{r+1} = Im z
  for (int64_t r = 0; r < s.lane_rows(); r += 2) {
    const bool pair = r + 1 < s.lane_rows();
    const Cvec* a = &w.spectra[r * half];
    const Cvec* b = pair ? &w.spectra[(r + 1) * half] : nullptr;
    for (int64_t k = 0; k < p1; ++k) {
      const bool mirrored = k >= half;
      const int64_t source = mirrored ? p1 - k : k;
      const bool real_only = source == 0 || 2 * source == p1;
      Cvec va = a[source], vb = b ? b[source] : Cvec{};
      if (mirrored) va.im = -va.im, vb.im = -vb.im;
      if (real_only) va.im = Vec{}, vb.im = Vec{};
      w.line[k] = {va.re - vb.im, va.im + vb.re};
    }
    row_plan.run(w.line.data(), w.scratch.data());
    for (int64_t c = 0; c < s.cols; ++c) w.rows[r * s.cols + c] = w.line[c].re * scale;
    if (pair)
      for (int64_t c = 0; c < s.cols; ++c) w.rows[(r + 1) * s.cols + c] = w.line[c].im * scale;
  }
  float* targets[kLanes];
  for (int64_t i = 0; i < s.per_lane(); ++i) {
    lane_signals(y, signal, s, m0, lanes, i, targets);
    scatter(w.rows.data() + i * signal, signal, targets);
  }
}

// Runs `group` over the groups of kLanes lanes in parallel, each thread with its own workspace
template <typename Group>
void for_each_group(const Shape& s, Group group) {
  const int64_t groups = (s.lanes() + kLanes - 1) / kLanes;
  const int64_t group_work = (s.lane_rows() + s.half()) * std::max(s.period0, s.period1) * 8;
  at::parallel_for(0, groups, std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, group_work)),
                   [&](int64_t begin, int64_t end) {
                     Workspace w(s);
                     for (int64_t g = begin; g < end; ++g)
                       group(g * kLanes, int(std::min<int64_t>(kLanes, s.lanes() - g * kLanes)), w);
                   });
}

void check_period(int64_t period0, int64_t period1, int64_t rows, int64_t cols) {
  TORCH_CHECK(period0 > 0 && period1 > 0, "rfft/irfft take positive periods, got ", period0, " x ", period1);
  TORCH_CHECK(rows <= period0 && cols <= period1, "rfft/irfft take signals no larger than the period ", period0,
              " x ", period1, ", got ", rows, " x ", cols);
}

Tensor rfft(const Tensor& x, int64_t period0, int64_t period1) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 3 && x.is_contiguous(),
              "rfft takes a contiguous float32 CPU tensor [M, N0, N1], got ", x.scalar_type(), " ", x.sizes());
  check_period(period0, period1, x.size(1), x.size(2));
  const Shape s{x.size(0), x.size(1), x.size(2), period0, period1};
  Tensor out = at::empty({s.signals, period0, s.half()}, x.options().dtype(at::kComplexFloat));
  if (s.signals == 0) return out;
  const Plan row_plan(int(period1), -1.f), column_plan(int(period0), -1.f);
  const float* source = x.data_ptr<float>();
  float* target = reinterpret_cast<float*>(out.data_ptr<c10::complex<float>>());
  for_each_group(s, [&](int64_t m0, int lanes, Workspace& w) {
    rfft_group(source, target, s, row_plan, column_plan, m0, lanes, w);
  });
  return out;
}

Tensor irfft(const Tensor& spectra, int64_t period0, int64_t period1, int64_t rows, int64_t cols) {
  TORCH_CHECK(spectra.device().is_cpu() && spectra.scalar_type() == at::kComplexFloat && spectra.dim() == 2 &&
                  spectra.stride(1) == 1,
              "irfft takes a complex64 CPU tensor [M, P0 F1] of contiguous rows, got ", spectra.scalar_type(), " ",
              spectra.sizes());
  check_period(period0, period1, rows, cols);
  const Shape s{spectra.size(0), rows, cols, period0, period1};
  TORCH_CHECK(spectra.size(1) == period0 * s.half(), "irfft of a ", period0, " x ", period1, " period takes ",
              period0 * s.half(), " frequencies a signal, got ", spectra.size(1));
  Tensor y = at::empty({s.signals, rows, cols}, spectra.options().dtype(at::kFloat));
  if (s.signals == 0 || rows == 0 || cols == 0) return y;
  const Plan row_plan(int(period1), 1.f), column_plan(int(period0), 1.f);
  const float* source = reinterpret_cast<const float*>(spectra.data_ptr<c10::complex<float>>());
  float* target = y.data_ptr<float>();
  const int64_t row_stride = spectra.size(0) > 1 ? spectra.stride(0) : spectra.size(1);
  for_each_group(s, [&](int64_t m0, int lanes, Workspace& w) {
    irfft_group(source, row_stride, target, s, row_plan, column_plan, m0, lanes, w);
  });
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using pybind11::arg;
  m.def("rfft", &rfft, "the half spectra [M, P0, P1 // 2 + 1] of x [M, N0, N1] zero-padded to P0 x P1", arg("x"),
        arg("period0"), arg("period1"));
  m.def("irfft", &irfft, "the first rows x cols samples [M, rows, cols] of irfftn of the half spectra [M, P0 F1]",
        arg("spectra"), arg("period0"), arg("period1"), arg("rows"), arg("cols"));
}
