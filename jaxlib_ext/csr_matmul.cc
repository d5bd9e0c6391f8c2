// CPU kernel for a CSR sparse x row-major dense product, registered with XLA through the FFI.
//
//   out[r, :] = sum over e in [indptr[r], indptr[r + 1]) of values[e] * dense[indices[e], :]
//
// Entries whose column index falls outside [0, dense rows) are skipped: graphs padded to a static
// edge count point their padding at an out-of-range vertex, as segment_sum's convention drops.
// Built on first use by jaxlib_ext/native.py (the source is hashed into the library's file name);
// jaxlib_ext/csr_matmul.py holds the jax.numpy reference and the wrapper that calls this.
//
// Why not jaxlib's CSR kernel: it vectorizes only at widths that are a multiple of 8 and measured
// 0.9 ms on a PubMed-size graph at width 16, where this kernel takes 0.35 ms on one thread and
// 0.25 ms on two. Here each output row is accumulated in 8-float vector registers (GCC/Clang vector
// extensions; -march=native picks AVX2 or AVX-512 codegen) with a scalar tail, and rows are split
// over XLA's intra-op thread pool in chunks of about equal nonzero count.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

typedef float Vec8 __attribute__((vector_size(32)));

inline Vec8 Load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}

struct Problem {
  const int32_t* indptr;
  const int32_t* indices;
  const float* values;  // nullptr: every stored entry is 1
  const float* dense;
  float* out;
  int64_t dense_rows;
  int64_t cols;
};

inline bool InRange(int32_t column, int64_t dense_rows) { return column >= 0 && column < dense_rows; }

template <bool kUnit>
inline float Weight(const Problem& p, int32_t e) {
  return kUnit ? 1.0f : p.values[e];
}

// Columns [c0, c0 + 8 * kVecs) of rows [r0, r1), accumulated in vector registers. Citation graphs
// have a handful of entries per row, so the loop is kept as short as possible: splitting a row's
// sum over several register sets (to hide add latency) measured slower, not faster.
template <int kVecs, bool kUnit>
void VectorColumns(const Problem& p, int64_t r0, int64_t r1, int64_t c0) {
  for (int64_t r = r0; r < r1; ++r) {
    Vec8 acc[kVecs] = {};
    for (int32_t e = p.indptr[r]; e < p.indptr[r + 1]; ++e) {
      const int32_t j = p.indices[e];
      if (!InRange(j, p.dense_rows)) continue;
      const float* b = p.dense + static_cast<int64_t>(j) * p.cols + c0;
      const float w = Weight<kUnit>(p, e);
      for (int v = 0; v < kVecs; ++v) acc[v] += kUnit ? Load8(b + 8 * v) : w * Load8(b + 8 * v);
    }
    std::memcpy(p.out + r * p.cols + c0, acc, sizeof(acc));
  }
}

// The last kWidth (< 8) columns, starting at c0, in scalar registers.
template <int kWidth, bool kUnit>
void TailColumns(const Problem& p, int64_t r0, int64_t r1, int64_t c0) {
  for (int64_t r = r0; r < r1; ++r) {
    float acc[kWidth] = {};
    for (int32_t e = p.indptr[r]; e < p.indptr[r + 1]; ++e) {
      const int32_t j = p.indices[e];
      if (!InRange(j, p.dense_rows)) continue;
      const float* b = p.dense + static_cast<int64_t>(j) * p.cols + c0;
      const float w = Weight<kUnit>(p, e);
      for (int c = 0; c < kWidth; ++c) acc[c] += w * b[c];
    }
    std::memcpy(p.out + r * p.cols + c0, acc, sizeof(acc));
  }
}

template <bool kUnit>
void Rows(const Problem& p, int64_t r0, int64_t r1) {
  // Column panels of 64 floats keep the accumulators in registers; then the remaining whole
  // vectors; then the scalar tail. Width-specialized loops, so every accumulator is a register.
  int64_t c0 = 0;
  for (; c0 + 64 <= p.cols; c0 += 64) VectorColumns<8, kUnit>(p, r0, r1, c0);
  switch ((p.cols - c0) / 8) {
    case 7: VectorColumns<7, kUnit>(p, r0, r1, c0); break;
    case 6: VectorColumns<6, kUnit>(p, r0, r1, c0); break;
    case 5: VectorColumns<5, kUnit>(p, r0, r1, c0); break;
    case 4: VectorColumns<4, kUnit>(p, r0, r1, c0); break;
    case 3: VectorColumns<3, kUnit>(p, r0, r1, c0); break;
    case 2: VectorColumns<2, kUnit>(p, r0, r1, c0); break;
    case 1: VectorColumns<1, kUnit>(p, r0, r1, c0); break;
    default: break;
  }
  c0 += (p.cols - c0) / 8 * 8;
  switch (p.cols - c0) {
    case 7: TailColumns<7, kUnit>(p, r0, r1, c0); break;
    case 6: TailColumns<6, kUnit>(p, r0, r1, c0); break;
    case 5: TailColumns<5, kUnit>(p, r0, r1, c0); break;
    case 4: TailColumns<4, kUnit>(p, r0, r1, c0); break;
    case 3: TailColumns<3, kUnit>(p, r0, r1, c0); break;
    case 2: TailColumns<2, kUnit>(p, r0, r1, c0); break;
    case 1: TailColumns<1, kUnit>(p, r0, r1, c0); break;
    default: break;
  }
}

void RunRows(const Problem& p, int64_t r0, int64_t r1) {
  if (p.values == nullptr) {
    Rows<true>(p, r0, r1);
  } else {
    Rows<false>(p, r0, r1);
  }
}

// State shared by the calling thread and the helper tasks. Every participant takes chunks from
// one counter, and the caller works too, so it never waits on a task that has not started (no
// deadlock when the pool is busy); a helper that starts late finds no chunk left and returns.
struct Job {
  Problem problem;
  std::vector<int64_t> bounds;  // chunk c covers rows [bounds[c], bounds[c + 1])
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;

  int64_t num_chunks() const { return static_cast<int64_t>(bounds.size()) - 1; }

  void Work() {
    const int64_t n = num_chunks();
    for (int64_t c = next.fetch_add(1); c < n; c = next.fetch_add(1)) {
      RunRows(problem, bounds[c], bounds[c + 1]);
      if (done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(mu);
        cv.notify_all();
      }
    }
  }
};

// Multiply-adds per chunk below which handing work to another thread costs more than it saves.
constexpr int64_t kMinWorkPerChunk = 1 << 15;

ffi::Error CsrMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> indptr, ffi::Buffer<ffi::S32> indices,
                     ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::F32> dense,
                     ffi::ResultBuffer<ffi::F32> out, bool unit_values) {
  const auto out_dims = out->dimensions();
  const auto dense_dims = dense.dimensions();
  if (out_dims.size() != 2 || dense_dims.size() != 2 || out_dims[1] != dense_dims[1]) {
    return ffi::Error::InvalidArgument("csr_matmul: out and dense must be 2-D with the same column count");
  }
  const int64_t rows = out_dims[0];
  if (static_cast<int64_t>(indptr.element_count()) != rows + 1) {
    return ffi::Error::InvalidArgument("csr_matmul: indptr must hold rows + 1 entries");
  }
  if (!unit_values && values.element_count() != indices.element_count()) {
    return ffi::Error::InvalidArgument("csr_matmul: values and indices must have the same length");
  }
  Problem p{indptr.typed_data(), indices.typed_data(), unit_values ? nullptr : values.typed_data(),
            dense.typed_data(), out->typed_data(), dense_dims[0], dense_dims[1]};
  if (rows == 0 || p.cols == 0) return ffi::Error::Success();
  const int64_t stored = static_cast<int64_t>(indices.element_count());
  const int64_t nnz = std::clamp<int64_t>(p.indptr[rows], 0, stored);
  if (p.indptr[0] != 0 || p.indptr[rows] != nnz) {
    return ffi::Error::InvalidArgument("csr_matmul: indptr must start at 0 and end within indices");
  }
  for (int64_t r = 0; r < rows; ++r) {  // a decreasing pointer would make a row read out of bounds
    if (p.indptr[r + 1] < p.indptr[r]) {
      return ffi::Error::InvalidArgument("csr_matmul: indptr must be non-decreasing");
    }
  }
  const int64_t work = (nnz + rows) * p.cols;
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  const int64_t chunks = std::min<int64_t>({4 * threads, work / kMinWorkPerChunk, rows});
  if (threads == 1 || chunks <= 1) {
    RunRows(p, 0, rows);
    return ffi::Error::Success();
  }
  auto job = std::make_shared<Job>();
  job->problem = p;
  // Row boundaries that give each chunk about the same count of (nonzeros + rows).
  job->bounds.push_back(0);
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t target = (nnz + rows) * c / chunks;
    int64_t lo = job->bounds.back(), hi = rows;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (p.indptr[mid] + mid < target) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    job->bounds.push_back(lo);
  }
  job->bounds.push_back(rows);
  const int64_t helpers = std::min<int64_t>(threads, chunks) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([job] { job->Work(); });
  job->Work();
  std::unique_lock<std::mutex> lock(job->mu);
  job->cv.wait(lock, [&] { return job->done.load() == job->num_chunks(); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FrugalCsrMatmul, CsrMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()  // indptr (rows + 1)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // indices (stored entries)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // values (stored entries, or 1 ignored)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dense (K, C)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out (rows, C)
                                  .Attr<bool>("unit_values"));
