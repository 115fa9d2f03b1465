// Sampling SMP kernels of points per filter on CPUs (smpconv_models/ops/sampling_cpu.py), the sequence and CIFAR-10
// models' kernels:
//
//   v[f, p, y, x]      = relu(1 - (|px[f, p] - nx[x]| + |py[f, p] - ny[y]|) / r[f, p])
//   c[f, y, x]         = 1 / (#{p : v[f, p, y, x] > 0} + 1e-6) where normalizing, else 1
//   kernel[f, i, y, x] = sum_p w[f, i, p] v[f, p, y, x] c[f, y, x]
//
// and its adjoints in the positions, the radii and the values (c, a count, has none): smp.py's `point_interpolation`
// and `smp_kernel`, each value computed in the same order of operations. PyTorch computes them as some 60 operations
// over every point and node of a layer, each tens of microseconds on a CPU whatever its size (a tenth of a CIFAR-10
// or sMNIST training step); here each point is evaluated only over the nodes its radius reaches along each axis, a
// run of the evenly spaced grid (a rectangle in 2-D) found from the point's interval with a node to spare on either
// side for rounding (nodes beyond its reach get the expression's value there: zero). A 1-D kernel is a 2-D kernel
// of one row at y = 0 with the points at y = 0: adding |0 - 0| changes no distance.
//
// The products with w: where the points reach a small part of the grid (a sequence model's reach 1-5 taps of
// thousands), sums over each point's rectangle, parallel over the filters, each value summed by one thread in one
// order; where they reach much of it (the CIFAR-10 model's, a third of their box), one batched matrix product of w
// and the values on the whole grid (short rows of a few scalar multiply-adds cost several times a product's).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

// The nodes [first, last) of the evenly spaced grid `nodes` (either way) within position -+ radius, with a node to
// spare either side: the only ones whose distance to the point can be under its radius (the whole grid where that
// is not a finite interval).
template <typename T>
void reach(const T* nodes, int64_t count, T position, T radius, int64_t& first, int64_t& last) {
  first = 0;
  last = count;
  if (count < 2) return;
  const double start = nodes[0];
  const double step = (double(nodes[count - 1]) - start) / double(count - 1);
  const double a = (double(position) - double(radius) - start) / step;
  const double b = (double(position) + double(radius) - start) / step;
  if (!std::isfinite(a) || !std::isfinite(b)) return;
  first = int64_t(std::clamp(std::floor(std::min(a, b)), 0., double(count)));
  last = int64_t(std::clamp(std::ceil(std::max(a, b)) + 1., double(first), double(count)));
}

// points' values summed over their rectangles cost about this many times a batched matrix product's multiply-adds
// over the whole grid (short runs of a row, scalar)
constexpr int64_t kDenseRatio = 8;

// The nodes of the kernel's grid: along x (coordinate 0, the kernel's last axis) and along y (coordinate 1; one node
// at 0 for 1-D kernels).
template <typename T>
struct Grid {
  const T* x;
  int64_t width;
  const T* y;
  int64_t height;
};

// A layer's points, evaluated: each point q = f * P + p's rectangle of nodes [y0, y1) x [x0, x1) and its values
// there (times c where normalizing), row by row from values[start[q]].
template <typename T>
class LayerPoints {
 public:
  LayerPoints(const Tensor& positions, const Tensor& radii, const Tensor& weights, const Grid<T>& grid,
              bool normalize)
      : grid(grid), filters(positions.size(0)), points(positions.size(1)), ndim_(positions.size(2)),
        normalize_(normalize), positions_(positions.data_ptr<T>()), radii_(radii.data_ptr<T>()) {
    const int64_t count = filters * points;
    y0.resize(count), y1.resize(count), x0.resize(count), x1.resize(count), start.resize(count + 1);
    start[0] = 0;
    for (int64_t q = 0; q < count; ++q) {
      if (reaches_every_node(q, weights)) {
        y0[q] = x0[q] = 0, y1[q] = grid.height, x1[q] = grid.width;
      } else {
        reach(grid.x, grid.width, px(q), radii_[q], x0[q], x1[q]);
        reach(grid.y, grid.height, py(q), radii_[q], y0[q], y1[q]);
      }
      start[q + 1] = start[q] + (y1[q] - y0[q]) * (x1[q] - x0[q]);
    }
    values.resize(start[count]);
    if (normalize) scale.assign(filters * grid.height * grid.width, T(0));
    at::parallel_for(0, filters, 1, [&](int64_t begin, int64_t end) {
      for (int64_t f = begin; f < end; ++f) evaluate(f);
    });
  }

  // Whether the points reach enough of the grid that one batched matrix product over their values on the whole
  // grid costs less than summing each point's rectangle (short runs of a row, a few multiply-adds each).
  bool dense() const { return int64_t(values.size()) * kDenseRatio >= filters * points * grid.height * grid.width; }

  // The values on the whole grid [F, P, height * width], zero beyond each point's rectangle.
  Tensor dense_values(const at::TensorOptions& options) const {
    const int64_t nodes = grid.height * grid.width;
    Tensor dense = at::zeros({filters, points, nodes}, options);
    T* out = dense.data_ptr<T>();
    at::parallel_for(0, filters * points, 1, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        const T* value = values.data() + start[q];
        for (int64_t y = y0[q]; y < y1[q]; ++y) {
          for (int64_t x = x0[q]; x < x1[q]; ++x) out[q * nodes + y * grid.width + x] = *value++;
        }
      }
    });
    return dense;
  }

  // The adjoints of point q's position and radius for the adjoint of its values, read from `grad_values` (at the
  // rectangle's first node) row by row, rows `row_stride` apart.
  void point_gradients(int64_t q, const T* grad_values, int64_t row_stride, T* grad_position, T& grad_radius) const {
    const T r = radii_[q];
    const T* node_scale = normalize_ ? &scale[q / points * grid.height * grid.width] : nullptr;  // its filter's c
    T grad_x = 0, grad_y = 0, grad_r = 0;
    for (int64_t y = y0[q]; y < y1[q]; ++y, grad_values += row_stride) {
      for (int64_t x = x0[q]; x < x1[q]; ++x) {
        const T d = distance(q, x, y);
        const T g = normalize_ ? grad_values[x - x0[q]] * node_scale[y * grid.width + x] : grad_values[x - x0[q]];
        const T grad_v = T(1) - d / r <= T(0) ? T(0) : g;  // relu's gradient, as PyTorch's: NaN passes
        grad_r += grad_v * (d / r / r);
        const T grad_d = -grad_v / r;
        grad_x += grad_d * sign(px(q) - grid.x[x]);
        grad_y += grad_d * sign(py(q) - grid.y[y]);
      }
    }
    grad_position[0] = grad_x;
    if (ndim_ == 2) grad_position[1] = grad_y;
    grad_radius = grad_r;
  }

  const Grid<T> grid;
  const int64_t filters, points;
  std::vector<int64_t> y0, y1, x0, x1, start;
  std::vector<T> values;

 private:
  void evaluate(int64_t f) {
    for_each_value(f, [&](int64_t q, int64_t y, int64_t x, T& value) {
      const T v = T(1) - distance(q, x, y) / radii_[q];
      value = v <= T(0) ? T(0) : v;  // relu, NaN kept
    });
    if (!normalize_) return;
    T* coverage = &scale[f * grid.height * grid.width];
    for_each_value(f, [&](int64_t, int64_t y, int64_t x, T& v) { coverage[y * grid.width + x] += T(v > T(0)); });
    for (int64_t node = 0; node < grid.height * grid.width; ++node) coverage[node] = T(1) / (coverage[node] + T(1e-6));
    for_each_value(f, [&](int64_t, int64_t y, int64_t x, T& v) { v *= coverage[y * grid.width + x]; });
  }

  // visit(point, row, column, value) for each of filter f's points' values
  template <typename Visit>
  void for_each_value(int64_t f, Visit visit) {
    for (int64_t q = f * points; q < (f + 1) * points; ++q) {
      T* value = values.data() + start[q];
      for (int64_t y = y0[q]; y < y1[q]; ++y) {
        for (int64_t x = x0[q]; x < x1[q]; ++x) visit(q, y, x, *value++);
      }
    }
  }

  // Whether point q's terms are nonzero or NaN at every node, as PyTorch's sampler computes them: a position or a
  // value that is not finite (a NaN or infinite value times the zeros of the other nodes is NaN), a radius that is not
  // positive (its relu is positive at every node).
  bool reaches_every_node(int64_t q, const Tensor& weights) const {
    if (!std::isfinite(px(q)) || !std::isfinite(py(q)) || !(radii_[q] > T(0))) return true;
    const int64_t inputs = weights.size(1), f = q / points, p = q % points;
    const T* w = weights.data_ptr<T>() + f * inputs * points + p;
    for (int64_t i = 0; i < inputs; ++i) {
      if (!std::isfinite(w[i * points])) return true;
    }
    return false;
  }

  T px(int64_t q) const { return positions_[q * ndim_]; }
  T py(int64_t q) const { return ndim_ == 2 ? positions_[q * ndim_ + 1] : T(0); }
  T distance(int64_t q, int64_t x, int64_t y) const {
    return std::abs(px(q) - grid.x[x]) + std::abs(py(q) - grid.y[y]);
  }
  static T sign(T value) { return T((value > T(0)) - (value < T(0))); }  // abs's gradient: 0 at 0

  const int64_t ndim_;
  const bool normalize_;
  const T* positions_;
  const T* radii_;
  std::vector<T> scale;  // [F, height * width]: c, where normalizing
};

void check(const Tensor& positions, const Tensor& radii, const Tensor& weights, const Tensor& nodes_x,
           const Tensor& nodes_y) {
  TORCH_CHECK(positions.device().is_cpu(), "sample takes CPU tensors, got positions on ", positions.device());
  TORCH_CHECK(positions.dim() == 3 && (positions.size(2) == 1 || positions.size(2) == 2),
              "sample takes positions [F, P, 1 or 2], got ", positions.sizes());
  TORCH_CHECK(radii.sizes() == positions.sizes().slice(0, 2), "sample takes radii [F, P], got ", radii.sizes(),
              " for positions ", positions.sizes());
  TORCH_CHECK(weights.dim() == 3 && weights.size(0) == positions.size(0) && weights.size(2) == positions.size(1),
              "sample takes weights [F, I, P], got ", weights.sizes(), " for positions ", positions.sizes());
  TORCH_CHECK(nodes_x.dim() == 1 && nodes_y.dim() == 1 && (positions.size(2) == 2 || nodes_y.numel() == 1),
              "sample takes nodes along x and along y (one for 1-D kernels), got ", nodes_x.sizes(), " and ",
              nodes_y.sizes());
  for (const Tensor* t : {&positions, &radii, &weights, &nodes_x, &nodes_y}) {
    TORCH_CHECK(t->scalar_type() == positions.scalar_type() && t->is_contiguous() && t->device() == positions.device(),
                "sample takes contiguous tensors of one dtype and device");
  }
}

// Whether to use the batched matrix product: the layer's choice (`dense` < 0), or as asked (tests).
template <typename T>
bool use_dense(const LayerPoints<T>& layer, int64_t dense) { return dense < 0 ? layer.dense() : dense > 0; }

// kernel [F, I, height, width] of the points per filter `positions` [F, P, ndim], `radii` [F, P] and `weights`
// [F, I, P] on the grid of nodes `nodes_x` [width] and `nodes_y` [height].
Tensor sample(const Tensor& positions, const Tensor& radii, const Tensor& weights, const Tensor& nodes_x,
              const Tensor& nodes_y, bool normalize, int64_t dense) {
  check(positions, radii, weights, nodes_x, nodes_y);
  const int64_t filters = positions.size(0), points = positions.size(1), inputs = weights.size(1);
  const int64_t height = nodes_y.numel(), width = nodes_x.numel();
  Tensor kernel;
  AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "sample", [&] {
    using T = scalar_t;
    const Grid<T> grid{nodes_x.data_ptr<T>(), width, nodes_y.data_ptr<T>(), height};
    const LayerPoints<T> layer(positions, radii, weights, grid, normalize);
    if (use_dense(layer, dense)) {
      kernel = at::bmm(weights, layer.dense_values(weights.options())).view({filters, inputs, height, width});
      return;
    }
    kernel = at::zeros({filters, inputs, height, width}, weights.options());
    const T* w_all = weights.data_ptr<T>();
    T* kernel_all = kernel.data_ptr<T>();
    at::parallel_for(0, filters, 1, [&](int64_t begin, int64_t end) {
      for (int64_t f = begin; f < end; ++f) {
        for (int64_t i = 0; i < inputs; ++i) {
          const T* w = w_all + (f * inputs + i) * points;
          T* out = kernel_all + (f * inputs + i) * height * width;
          for (int64_t p = 0, q = f * points; p < points; ++p, ++q) {
            const T* value = layer.values.data() + layer.start[q];
            for (int64_t y = layer.y0[q]; y < layer.y1[q]; ++y) {
              T* row = out + y * width;
              for (int64_t x = layer.x0[q]; x < layer.x1[q]; ++x) row[x] += w[p] * *value++;
            }
          }
        }
      }
    });
  });
  return kernel;
}

// The adjoints of `sample` in positions, radii and weights for `grad_kernel` [F, I, height, width].
std::tuple<Tensor, Tensor, Tensor> grad(const Tensor& grad_kernel, const Tensor& positions, const Tensor& radii,
                                        const Tensor& weights, const Tensor& nodes_x, const Tensor& nodes_y,
                                        bool normalize, int64_t dense) {
  check(positions, radii, weights, nodes_x, nodes_y);
  const int64_t filters = positions.size(0), points = positions.size(1), ndim = positions.size(2);
  const int64_t inputs = weights.size(1), height = nodes_y.numel(), width = nodes_x.numel();
  TORCH_CHECK(grad_kernel.sizes() == at::IntArrayRef({filters, inputs, height, width}) &&
                  grad_kernel.is_contiguous() && grad_kernel.scalar_type() == positions.scalar_type(),
              "grad takes a contiguous grad_kernel [F, I, height, width] of the points' dtype, got ",
              grad_kernel.sizes());
  Tensor grad_positions = at::zeros_like(positions), grad_radii = at::zeros_like(radii), grad_weights;
  AT_DISPATCH_FLOATING_TYPES(positions.scalar_type(), "grad", [&] {
    using T = scalar_t;
    const Grid<T> grid{nodes_x.data_ptr<T>(), width, nodes_y.data_ptr<T>(), height};
    const LayerPoints<T> layer(positions, radii, weights, grid, normalize);
    T* grad_position = grad_positions.data_ptr<T>();
    T* grad_radius = grad_radii.data_ptr<T>();
    if (use_dense(layer, dense)) {
      const Tensor grad_kernels = grad_kernel.view({filters, inputs, height * width});
      grad_weights = at::bmm(grad_kernels, layer.dense_values(weights.options()).transpose(1, 2));
      const Tensor grad_values = at::bmm(weights.transpose(1, 2), grad_kernels);  // [F, P, height * width]
      const T* grad_value = grad_values.data_ptr<T>();
      at::parallel_for(0, filters * points, 1, [&](int64_t begin, int64_t end) {
        for (int64_t q = begin; q < end; ++q) {
          layer.point_gradients(q, grad_value + q * height * width + layer.y0[q] * width + layer.x0[q], width,
                                grad_position + q * ndim, grad_radius[q]);
        }
      });
      return;
    }
    grad_weights = at::empty_like(weights);
    const T* w_all = weights.data_ptr<T>();
    T* grad_w_all = grad_weights.data_ptr<T>();
    at::parallel_for(0, filters, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> grad_values;
      for (int64_t f = begin; f < end; ++f) {
        const int64_t first = layer.start[f * points];
        grad_values.assign(layer.start[(f + 1) * points] - first, T(0));
        for (int64_t i = 0; i < inputs; ++i) {
          const T* w = w_all + (f * inputs + i) * points;
          T* grad_w = grad_w_all + (f * inputs + i) * points;
          const T* grad_out = grad_kernel.data_ptr<T>() + (f * inputs + i) * height * width;
          for (int64_t p = 0, q = f * points; p < points; ++p, ++q) {
            const T* value = layer.values.data() + layer.start[q];
            T* grad_value = grad_values.data() + (layer.start[q] - first);
            T sum = 0;
            for (int64_t y = layer.y0[q]; y < layer.y1[q]; ++y) {
              const T* row = grad_out + y * width;
              for (int64_t x = layer.x0[q]; x < layer.x1[q]; ++x) {
                sum += row[x] * *value++;
                *grad_value++ += row[x] * w[p];
              }
            }
            grad_w[p] = sum;
          }
        }
        for (int64_t q = f * points; q < (f + 1) * points; ++q) {
          layer.point_gradients(q, grad_values.data() + (layer.start[q] - first), layer.x1[q] - layer.x0[q],
                                grad_position + q * ndim, grad_radius[q]);
        }
      }
    });
  });
  return {grad_positions, grad_radii, grad_weights};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using pybind11::arg;
  const auto no_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  m.def("sample", &sample, "kernel [F, I, height, width] of points per filter on the grid nodes_y x nodes_x",
        arg("positions"), arg("radii"), arg("weights"), arg("nodes_x"), arg("nodes_y"), arg("normalize"),
        arg("dense"), no_gil);
  m.def("grad", &grad, "the adjoints of sample in positions, radii and weights", arg("grad_kernel"),
        arg("positions"), arg("radii"), arg("weights"), arg("nodes_x"), arg("nodes_y"), arg("normalize"),
        arg("dense"), no_gil);
}
