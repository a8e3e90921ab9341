// jaxdissect's native CPU kernels (XLA FFI), built by stats/native.py:
// the top-B merge (stats/select.py) and a radix-select histogram pass
// (stats/quantile.py).
//
// top [u, B] f32 (any order, -inf = empty), x [n, u] f32 (pixels by units)
//   -> values [u, B] f32: each unit's B largest of top and x,
//      src [u, B] s32: src < B is top's column, src >= B is x's row src - B.
//
// 1. A floor per unit with at least B values of the union strictly above it, or
//    -inf: the buffer's minimum once it is full; otherwise the r-th largest of
//    every 8th row (r = ceil(1.25 B / 8) + 16), verified by the count of step 2:
//    when fewer than B values exceed it, values equal to it complete the B
//    largest if there are enough, else it is dropped (the unit rescanned with
//    -inf).
// 2. One row-major scan of x keeps, per unit, the values above its floor.
// 3. Per unit, nth_element over the buffer and its survivors keeps the B largest.
// NaN values are not supported (as everywhere in jaxdissect's statistics).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Entry = std::pair<float, int32_t>;

constexpr int64_t kStride = 8;

bool Greater(const Entry& a, const Entry& b) { return a.first > b.first; }

// Bit k set iff x[k] > f[k], k = 0..3.
inline int AboveMask4(const float* x, const float* f) {
#if defined(__SSE2__)
  return _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x), _mm_loadu_ps(f)));
#else
  return (x[0] > f[0]) | (x[1] > f[1]) << 1 | (x[2] > f[2]) << 2 | (x[3] > f[3]) << 3;
#endif
}

ffi::Error TopMergeImpl(ffi::Buffer<ffi::F32> top, ffi::Buffer<ffi::F32> x,
                        ffi::ResultBuffer<ffi::F32> out_values,
                        ffi::ResultBuffer<ffi::S32> out_src) {
  auto td = top.dimensions();
  auto xd = x.dimensions();
  if (td.size() != 2 || xd.size() != 2 || xd[1] != td[0]) {
    return ffi::Error::InvalidArgument("top_merge needs top [u, B] and x [n, u]");
  }
  const int64_t units = td[0], budget = td[1], n = xd[0];
  const float* T = top.typed_data();
  const float* X = x.typed_data();
  float* out_v = out_values->typed_data();
  int32_t* out_s = out_src->typed_data();
  const float kNegInf = -std::numeric_limits<float>::infinity();

  // 1. floors
  std::vector<float> floor(units);
  std::vector<char> estimated(units, 0);
  std::vector<int64_t> open;
  for (int64_t j = 0; j < units; ++j) {
    floor[j] = *std::min_element(T + j * budget, T + (j + 1) * budget);
    if (!(floor[j] > kNegInf)) open.push_back(j);
  }
  const int64_t samples = (n + kStride - 1) / kStride;
  const int64_t rank = static_cast<int64_t>(std::ceil(1.25 * budget / kStride)) + 16;
  if (!open.empty() && samples >= rank) {
    const int64_t m = static_cast<int64_t>(open.size());
    std::vector<float> sample(m * samples);
    for (int64_t i = 0; i < samples; ++i) {
      const float* row = X + i * kStride * units;
      for (int64_t k = 0; k < m; ++k) sample[k * samples + i] = row[open[k]];
    }
    for (int64_t k = 0; k < m; ++k) {
      float* s = sample.data() + k * samples;
      std::nth_element(s, s + rank - 1, s + samples, std::greater<float>());
      floor[open[k]] = s[rank - 1];
      estimated[open[k]] = 1;
    }
  }

  // 2. survivors, one row-major scan. Survivors are rare (a few percent of a
  //    batch, fewer once the buffers are full), so each row is compared 4 units
  //    at a time without branches and only a group with a survivor branches.
  std::vector<std::vector<Entry>> cand(units);
  for (int64_t j = 0; j < units; ++j) cand[j].reserve(2 * budget);
  const float* F = floor.data();
  for (int64_t i = 0; i < n; ++i) {
    const float* row = X + i * units;
    const int32_t at = static_cast<int32_t>(budget + i);
    int64_t j = 0;
    for (; j + 4 <= units; j += 4) {
      int mask = AboveMask4(row + j, F + j);
      while (mask) {
        const int k = __builtin_ctz(mask);
        mask &= mask - 1;
        cand[j + k].emplace_back(row[j + k], at);
      }
    }
    for (; j < units; ++j) {
      if (row[j] > F[j]) cand[j].emplace_back(row[j], at);
    }
  }

  // 3. per unit: buffer + survivors, keep the B largest
  std::vector<Entry> all;
  for (int64_t j = 0; j < units; ++j) {
    const float* t = T + j * budget;
    if (estimated[j]) {
      int64_t above = static_cast<int64_t>(cand[j].size());
      for (int64_t b = 0; b < budget; ++b) above += t[b] > floor[j];
      if (above < budget) {
        // Fewer than B values above the estimate: the B-th largest is at or below
        // it. When enough values equal it (ties, e.g. the zeros of a ReLU), they
        // complete the B largest (equal values are interchangeable), and the
        // column is read only until they are found.
        const float f = floor[j];
        int64_t need = f > kNegInf ? budget - above : 1;
        for (int64_t i = 0; i < n && need > 0 && f > kNegInf; ++i) {
          if (X[i * units + j] == f) {
            cand[j].emplace_back(f, static_cast<int32_t>(budget + i));
            --need;
          }
        }
        if (need > 0) {  // the estimate was too high: every value is a candidate
          cand[j].clear();
          for (int64_t i = 0; i < n; ++i) {
            const float v = X[i * units + j];
            if (v > kNegInf) cand[j].emplace_back(v, static_cast<int32_t>(budget + i));
          }
        }
      }
    }
    all.clear();
    all.reserve(budget + cand[j].size());
    for (int64_t b = 0; b < budget; ++b) all.emplace_back(t[b], static_cast<int32_t>(b));
    all.insert(all.end(), cand[j].begin(), cand[j].end());
    if (static_cast<int64_t>(all.size()) > budget) {
      std::nth_element(all.begin(), all.begin() + (budget - 1), all.end(), Greater);
    }
    for (int64_t b = 0; b < budget; ++b) {
      out_v[j * budget + b] = all[b].first;
      out_s[j * budget + b] = all[b].second;
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxdissectTopMerge, TopMergeImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

// ---------------------------------------------------------------------------
// One pass of the exact radix select (stats/quantile.py, RadixHistogram).
//
// x [n, u] f32, valid [n] u8 (0: padding), prefix [u, L] u32, attributes known
// and bits -> counts [u, L, 2^bits] s32: for each unit and level, the histogram
// of key bits [32 - known - bits, 32 - known) among values whose top `known` key
// bits equal the level's prefix. Keys are the order-preserving uint32 images of
// the floats (negative: all bits flipped; non-negative: sign bit set). Rows are
// processed in tiles so that each unit's histogram stays in cache.

namespace {

inline uint32_t FloatKey(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return (bits >> 31) ? ~bits : (bits | 0x80000000u);
}

ffi::Error RadixHistogramImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> valid,
                              ffi::Buffer<ffi::U32> prefix, int64_t known, int64_t bits,
                              ffi::ResultBuffer<ffi::S32> counts) {
  auto xd = x.dimensions();
  auto pd = prefix.dimensions();
  if (xd.size() != 2 || pd.size() != 2 || pd[0] != xd[1] ||
      valid.dimensions().size() != 1 || valid.dimensions()[0] != xd[0] || known < 0 ||
      bits <= 0 || known + bits > 32) {
    return ffi::Error::InvalidArgument("radix_histogram: bad shapes or digit");
  }
  const int64_t n = xd[0], units = xd[1], levels = pd[1];
  const int64_t bins = int64_t{1} << bits;
  const int shift = static_cast<int>(32 - known - bits);
  const uint32_t mask = static_cast<uint32_t>(bins - 1);
  const float* X = x.typed_data();
  const uint8_t* V = valid.typed_data();
  const uint32_t* P = prefix.typed_data();
  int32_t* C = counts->typed_data();
  std::fill(C, C + units * levels * bins, 0);
  constexpr int64_t kTile = 256;
  for (int64_t start = 0; start < n; start += kTile) {
    const int64_t stop = std::min(n, start + kTile);
    for (int64_t j = 0; j < units; ++j) {
      int32_t* hist = C + j * levels * bins;
      const uint32_t* pre = P + j * levels;
      for (int64_t i = start; i < stop; ++i) {
        if (!V[i]) continue;
        const uint32_t key = FloatKey(X[i * units + j]);
        const uint32_t digit = (key >> shift) & mask;
        if (known == 0) {
          for (int64_t l = 0; l < levels; ++l) ++hist[l * bins + digit];
        } else {
          const uint32_t high = key >> (32 - known);
          for (int64_t l = 0; l < levels; ++l) {
            if (high == pre[l]) ++hist[l * bins + digit];
          }
        }
      }
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxdissectRadixHistogram, RadixHistogramImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Attr<int64_t>("known")
                                  .Attr<int64_t>("bits")
                                  .Ret<ffi::Buffer<ffi::S32>>());
