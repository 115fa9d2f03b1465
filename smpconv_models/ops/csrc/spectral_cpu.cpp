// The per-frequency matrix products of the FFT convolution on CPUs (smpconv_models/ops/spectral_cpu.py):
//
//   out[m, n, f] = sum_k a[m, k, f] b[k, n, f]        (complex64; a and b each conjugated where told)
//
// on spectra as rfft lays them out, the frequencies of each row contiguous ([batch, channels, F]): a[m, k] is the
// row at a + m stride_am + k stride_ak, b[k, n] at b + k stride_bk + n stride_bn, out is [M, N, F] (its rows padded
// to whole cache lines, below). A batched matrix product (bmm) needs them frequency-major, [F, M, K], and its
// result back batch-major for the inverse transform: transposing copies as large as the spectra around every
// product (a raw Speech Commands layer's [32, 30, 10801] spectra: 8.8 ms a copy, 27 ms a product; packed here,
// 30-36 ms for both).
//
// Layout: tiles of kTile frequencies. A tile's rows of a and b are packed side by side, kTile real parts then kTile
// imaginary parts (conjugated there where told), so that each complex multiply-add is four fused multiply-adds of
// whole vectors with no shuffles; blocks of kBlockM x kBlockN outputs are then summed in registers over k and
// stored interleaved again. Tiles are taken in groups: b's rows are packed for a group's tiles at once, then, for
// each kBlockM rows of a, those rows for the group's tiles and their blocks of outputs. So each row is visited once
// a group, for up to 512 bytes (8 AVX tiles): an rfft's rows are a period apart, each on a page of its own (a TLB
// miss a visit). Visited a tile at a time, packing took a third of an sMNIST product's time on an AVX2 EPYC; in
// groups, the products (same bits) are 1.1-1.2x as fast at sMNIST's and CIFAR-10's sizes, 1.4x at raw Speech
// Commands'. While packing a row, the row a few visits on is prefetched. Tiles and blocks are sized by the CPU's
// vectors (below).
//
// Stores: each output row starts on a cache line (rows padded to whole lines; the result is a view of the first F
// frequencies), so a whole tile's outputs are whole lines, written with non-temporal stores. Ordinary stores first
// read every line they write into the cache, and a product's output (8.9 MB for an sMNIST layer at batch 64) is
// read again only by the inverse transform after the whole product. On a 2-core EPYC, freed memory kept for reuse as
// in training (the same bits): sMNIST's [64, 30, 577] products 2.7-3.3 ms against 3.3-3.7 ms, CIFAR-10's
// [64, 48, 684] 7.1-7.5 against 7.7-8.8 ms, raw Speech Commands' [32, 30, 10801] 29-37 against 34-40 ms (AVX-512);
// whole training steps 3-4% faster.
//
// Parallel over groups of tiles: no two threads write the same element and every sum runs in one order, so results
// do not depend on the number of threads.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/complex.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

using at::Tensor;

#if defined(__AVX512F__)
// frequencies per tile: one AVX-512 register of real parts and one of imaginary parts
constexpr int64_t kTile = 16;
// outputs summed in registers at once: 2 kBlockM kBlockN accumulators, plus 2 kBlockN values of b and 2 of a,
// fill the 32 AVX-512 registers
constexpr int kBlockM = 4;
constexpr int kBlockN = 3;
#else
// one AVX register of real parts and one of imaginary parts (two SSE or NEON registers each)
constexpr int64_t kTile = 8;
// 2 kBlockM kBlockN accumulators and 2 kBlockN values of b fill the 16 AVX registers (the multiply-adds read a's
// values from memory); AVX-512's tiles and blocks would keep most accumulators on the stack (products 3-4x slower on
// an AVX2 EPYC)
constexpr int kBlockM = 3;
constexpr int kBlockN = 2;
#endif
// complex multiply-adds per parallel task at least: fewer cost more to schedule than they save
constexpr int64_t kMinTaskWork = 1 << 16;
// bytes of a row packed per visit, at most: a group's tiles (8 with AVX, 4 with AVX-512)
constexpr int64_t kGroupRowBytes = 512;
// bytes of b's packed rows a group, at most: fewer tiles a group where b is large. On an AVX2 EPYC (L2 512 KB),
// sMNIST's products were fastest in groups of 8 tiles (b's packed rows 460 KB), CIFAR-10's in groups of 4 (590 KB;
// 8 tiles, 1.2 MB, were slower)
constexpr int64_t kGroupPackedBytes = 640 << 10;
// groups a thread gets at least, where there are tiles enough: the threads finish close together
constexpr int64_t kGroupsPerThread = 4;
// row visits between prefetching a row and packing it
constexpr int64_t kPrefetchAhead = 4;

// bytes of a cache line, which packed rows and output rows start on: a vector never straddles two lines, and a
// whole tile's outputs are whole lines
constexpr int64_t kAlignment = 64;

float* aligned(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + kAlignment - 1) & ~uintptr_t(kAlignment - 1));
}

typedef float Vector __attribute__((vector_size(kTile * sizeof(float))));
typedef int32_t Indices __attribute__((vector_size(kTile * sizeof(int32_t))));

// The lanes that take the real parts (the even floats) of kTile interleaved complex values in two vectors.
template <int32_t... lane>
constexpr Indices even_lanes(std::integer_sequence<int32_t, lane...>) {
  return Indices{(2 * lane)...};
}

// The lanes that interleave the first kTile / 2 real parts (a first vector) with as many imaginary parts (a second).
template <int32_t... lane>
constexpr Indices interleaving_lanes(std::integer_sequence<int32_t, lane...>) {
  return Indices{(lane / 2 + lane % 2 * kTile)...};
}

constexpr Indices kEvenLanes = even_lanes(std::make_integer_sequence<int32_t, kTile>{});
constexpr Indices kInterleavingLanes = interleaving_lanes(std::make_integer_sequence<int32_t, kTile>{});

Vector load(const float* from) {
  Vector v;
  std::memcpy(&v, from, sizeof v);
  return v;
}

void store(float* to, Vector v) { std::memcpy(to, &v, sizeof v); }

// Stores v to `to` past the caches where `to` is aligned to a vector (and the CPU can), else as `store` does.
void stream(float* to, Vector v) {
#if defined(__AVX512F__)
  if (reinterpret_cast<uintptr_t>(to) % sizeof v == 0) return _mm512_stream_ps(to, reinterpret_cast<__m512&>(v));
#elif defined(__AVX__)
  if (reinterpret_cast<uintptr_t>(to) % sizeof v == 0) return _mm256_stream_ps(to, reinterpret_cast<__m256&>(v));
#endif
  store(to, v);
}

// Orders this thread's non-temporal stores before what follows it (they are weakly ordered).
void fence_streams() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

// One row's `valid` (<= kTile) interleaved frequencies from `from` as kTile real parts then kTile imaginary parts
// (zeros past `valid`), conjugated where told.
void pack(const float* from, int64_t valid, bool conjugate, float* to) {
  float padded[2 * kTile];
  if (valid < kTile) {
    std::fill(padded, padded + 2 * kTile, 0.f);
    std::copy(from, from + 2 * valid, padded);
    from = padded;
  }
  const Vector low = load(from), high = load(from + kTile);
  const Vector imag = __builtin_shuffle(low, high, kEvenLanes + 1);
  store(to, __builtin_shuffle(low, high, kEvenLanes));
  store(to + kTile, conjugate ? -imag : imag);
}

// The real parts `re` and imaginary parts `im` of `valid` frequencies, interleaved into `to` (a whole tile past
// the caches).
void unpack(Vector re, Vector im, int64_t valid, float* to) {
  const Vector low = __builtin_shuffle(re, im, kInterleavingLanes);
  const Vector high = __builtin_shuffle(re, im, kInterleavingLanes + kTile / 2);
  if (valid == kTile) {
    stream(to, low);
    stream(to + kTile, high);
    return;
  }
  float interleaved[2 * kTile];
  store(interleaved, low);
  store(interleaved + kTile, high);
  std::copy(interleaved, interleaved + 2 * valid, to);
}

// The sizes of a product and where its operands' rows lie.
struct Product {
  int64_t m, k, n, frequencies;
  const float *a, *b;
  int64_t stride_am, stride_ak, stride_bk, stride_bn, out_row;  // in complex values
  bool conj_a, conj_b;
  float* out;
  // floats of b's packed rows for one tile: a group's tiles lie this far apart
  int64_t packed_b_tile() const { return n * k * 2 * kTile; }
};

// `count` consecutive tiles from frequency f0, packed and summed together.
struct Group {
  int64_t f0, count, frequencies;
  // the frequencies of the group's tile t
  int64_t valid(int64_t t) const { return std::min(kTile, frequencies - f0 - t * kTile); }
};

// Packs the rows (r, k), r < rows, k < depth, of an operand at from + r stride_r + k stride_k: tile t of each to
// packed + t plane + (r depth + k) 2 kTile. Rows are visited in the order they lie in memory (a transposed view's
// rows, a batch of channels apart, would otherwise each touch a page of their own: the weight gradient's x, 138 KB
// between consecutive rows in an sMNIST layer).
void pack_rows(const float* from, int64_t rows, int64_t depth, int64_t stride_r, int64_t stride_k, bool conjugate,
               const Group& group, float* packed, int64_t plane) {
  const bool rows_outer = stride_k <= stride_r;
  const int64_t outer = rows_outer ? rows : depth, inner = rows_outer ? depth : rows;
  const int64_t stride_outer = rows_outer ? stride_r : stride_k, stride_inner = rows_outer ? stride_k : stride_r;
  from += group.f0 * 2;
  // the visit kPrefetchAhead on, at (ahead_outer, ahead_inner)
  int64_t ahead_outer = kPrefetchAhead / inner, ahead_inner = kPrefetchAhead % inner;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      if (ahead_outer < outer) {
        const float* ahead = from + (ahead_outer * stride_outer + ahead_inner * stride_inner) * 2;
        for (int64_t line = 0; line < group.count * 2 * kTile; line += kAlignment / sizeof(float))
          __builtin_prefetch(ahead + line, 0, 0);
        if (++ahead_inner == inner) ahead_inner = 0, ++ahead_outer;
      }
      const float* row = from + (o * stride_outer + i * stride_inner) * 2;
      float* to = packed + (rows_outer ? o * depth + i : i * depth + o) * 2 * kTile;
      for (int64_t t = 0; t < group.count; ++t) pack(row + t * 2 * kTile, group.valid(t), conjugate, to + t * plane);
    }
  }
}

// A tile's outputs (m0 .. m0 + BM, n0 .. n0 + BN) from its packed rows: a's (m0 + i, k) at packed_a + (i K + k) 2
// kTile, b's (k, n) at packed_b + (n K + k) 2 kTile.
template <int BM, int BN>
void block(const Product& p, const float* packed_a, const float* packed_b, int64_t m0, int64_t n0, int64_t f0,
           int64_t valid) {
  const int64_t depth = p.k;  // a local: stores through `out` could otherwise change p.k, for all the compiler knows
  Vector re[BM][BN] = {}, im[BM][BN] = {};
  for (int64_t k = 0; k < depth; ++k) {
    Vector b_re[BN], b_im[BN];
    for (int j = 0; j < BN; ++j) {
      const float* row = packed_b + ((n0 + j) * depth + k) * 2 * kTile;
      b_re[j] = load(row);
      b_im[j] = load(row + kTile);
    }
    for (int i = 0; i < BM; ++i) {
      const float* row = packed_a + (i * depth + k) * 2 * kTile;
      const Vector a_re = load(row), a_im = load(row + kTile);
      for (int j = 0; j < BN; ++j) {
        re[i][j] += a_re * b_re[j];
        re[i][j] -= a_im * b_im[j];
        im[i][j] += a_re * b_im[j];
        im[i][j] += a_im * b_re[j];
      }
    }
  }
  for (int i = 0; i < BM; ++i)
    for (int j = 0; j < BN; ++j)
      unpack(re[i][j], im[i][j], valid, p.out + (((m0 + i) * p.n + n0 + j) * p.out_row + f0) * 2);
}

// The group's outputs in rows m0 .. m0 + BM: those rows of a packed, then their blocks, tile by tile.
template <int BM>
void rows_of_blocks(const Product& p, const Group& group, const float* packed_b, int64_t m0, float* packed_a) {
  const int64_t plane_a = BM * p.k * 2 * kTile;
  pack_rows(p.a + m0 * p.stride_am * 2, BM, p.k, p.stride_am, p.stride_ak, p.conj_a, group, packed_a, plane_a);
  for (int64_t t = 0; t < group.count; ++t) {
    const float *a = packed_a + t * plane_a, *b = packed_b + t * p.packed_b_tile();
    const int64_t f0 = group.f0 + t * kTile, valid = group.valid(t);
    int64_t n0 = 0;
    for (; n0 + kBlockN <= p.n; n0 += kBlockN) block<BM, kBlockN>(p, a, b, m0, n0, f0, valid);
    for (; n0 < p.n; ++n0) block<BM, 1>(p, a, b, m0, n0, f0, valid);
  }
}

void group_of_tiles(const Product& p, const Group& group, float* packed_a, float* packed_b) {
  pack_rows(p.b, p.n, p.k, p.stride_bn, p.stride_bk, p.conj_b, group, packed_b, p.packed_b_tile());
  int64_t m0 = 0;
  for (; m0 + kBlockM <= p.m; m0 += kBlockM) rows_of_blocks<kBlockM>(p, group, packed_b, m0, packed_a);
  for (; m0 < p.m; ++m0) rows_of_blocks<1>(p, group, packed_b, m0, packed_a);
}

Tensor products(const Tensor& a, const Tensor& b, bool conj_a, bool conj_b) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "spectral products take CPU tensors");
  TORCH_CHECK(a.scalar_type() == at::kComplexFloat && b.scalar_type() == at::kComplexFloat,
              "spectral products take complex64 tensors, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(1) == b.size(0) && a.size(2) == b.size(2),
              "spectral products take a [M, K, F] and b [K, N, F], got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.stride(2) == 1 && b.stride(2) == 1, "spectral products take rows of contiguous frequencies");
  TORCH_CHECK(!a.is_conj() && !b.is_conj(), "spectral products take conjugation as flags, not conjugate views");
  constexpr int64_t line = kAlignment / sizeof(c10::complex<float>);
  Product p{a.size(0), a.size(1), b.size(1), a.size(2),
            reinterpret_cast<const float*>(a.data_ptr<c10::complex<float>>()),
            reinterpret_cast<const float*>(b.data_ptr<c10::complex<float>>()),
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), (a.size(2) + line - 1) / line * line,
            conj_a, conj_b, nullptr};
  Tensor out = at::empty({p.m, p.n, p.out_row}, a.options()).narrow(2, 0, p.frequencies);
  if (out.numel() == 0) return out;
  if (p.k == 0) return out.zero_();
  p.out = reinterpret_cast<float*>(out.data_ptr<c10::complex<float>>());
  const int64_t tiles = (p.frequencies + kTile - 1) / kTile;
  const int64_t tile_bytes = 2 * kTile * sizeof(float);
  const int64_t per_group = std::max<int64_t>(
      1, std::min({kGroupRowBytes / tile_bytes, kGroupPackedBytes / int64_t(p.packed_b_tile() * sizeof(float)),
                   tiles / (kGroupsPerThread * at::get_num_threads())}));
  const int64_t groups = (tiles + per_group - 1) / per_group;
  const int64_t grain = std::max<int64_t>(1, kMinTaskWork / (p.m * p.k * p.n * kTile * per_group));
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    const int64_t packed_a_size = kBlockM * p.k * 2 * kTile * per_group;
    std::vector<float> packed(packed_a_size + p.packed_b_tile() * per_group + kAlignment / sizeof(float));
    float* packed_a = aligned(packed.data());
    for (int64_t g = begin; g < end; ++g) {
      const Group group{g * per_group * kTile, std::min(per_group, tiles - g * per_group), p.frequencies};
      group_of_tiles(p, group, packed_a, packed_a + packed_a_size);
    }
    fence_streams();
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using pybind11::arg;
  m.def("products", &products,
        "out[m, n, f] = sum_k a[m, k, f] b[k, n, f], each conjugated where told; rows start on cache lines", arg("a"),
        arg("b"), arg("conj_a"), arg("conj_b"));
}
