// The top-B merge of cpu_kernels.cc, for any source of rows: a plain [n, u]
// matrix (stats/select.py) or a batch's upsampled maps, computed row by row and
// never materialised (blend.h, stats/upsample_merge.py).
//
// top [u, B] f32 (any order, -inf = empty) and the source's n rows of u values
//   -> values [u, B] f32: each unit's B largest of top and the rows,
//      src [u, B] s32: src < B is top's column, src >= B is row src - B.
//
// 1. A floor per unit with at least B values of the union strictly above it, or
//    -inf: the buffer's minimum once it is full; otherwise the r-th largest of a
//    sample of one row in 32 (r = ceil(1.5 B / 32) + 16; row 32 s + h(s), h a
//    hash of s below 32, so that the sample does not fall on a lattice of the
//    image grid, whose upsampled neighbours are alike), verified by the count
//    of step 2:
//    when fewer than B values exceed it, values equal to it complete the B
//    largest if there are enough, else it is dropped (the unit rescanned with
//    -inf).
// 2. One scan of the rows in order keeps, per unit, the values above its floor.
// 3. Per unit, nth_element over the buffer and its survivors keeps the B largest.
// NaN values are not supported (as everywhere in jaxdissect's statistics).
//
// A Source has n() and units(); Row(i) -> const float* [units], called with
// increasing i within each of steps 1 and 2; Value(i, j) -> float, any order.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace jaxdissect {

using Entry = std::pair<float, int32_t>;

constexpr int64_t kStride = 32;

// The row of sample s: s * kStride plus a hashed offset below kStride.
inline int64_t SampleRow(int64_t s, int64_t n) {
  const uint32_t offset = (static_cast<uint32_t>(s) * 2654435761u >> 20) % kStride;
  return std::min(n - 1, s * kStride + offset);
}

inline bool Greater(const Entry& a, const Entry& b) { return a.first > b.first; }

// Bit k set iff x[k] > f[k], k = 0..3.
inline int AboveMask4(const float* x, const float* f) {
#if defined(__SSE2__)
  return _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x), _mm_loadu_ps(f)));
#else
  return (x[0] > f[0]) | (x[1] > f[1]) << 1 | (x[2] > f[2]) << 2 | (x[3] > f[3]) << 3;
#endif
}

// Step 1 for the units whose buffer is not full: the r-th largest of the sample. The sample is gathered in blocks of rows and transposed block by block,
// so that both the rows and each unit's sample are read and written in order.
template <class Source>
void EstimateFloors(Source& src, int64_t budget, const std::vector<int64_t>& open,
                    std::vector<float>& floor, std::vector<char>& estimated) {
  const int64_t n = src.n(), units = src.units(), m = static_cast<int64_t>(open.size());
  const int64_t samples = (n + kStride - 1) / kStride;
  const int64_t rank = static_cast<int64_t>(std::ceil(1.5 * budget / kStride)) + 16;
  if (m == 0 || samples < rank) return;
  std::vector<float> sample(m * samples);
  constexpr int64_t kBlock = 64;
  std::vector<float> block(kBlock * units);
  for (int64_t start = 0; start < samples; start += kBlock) {
    const int64_t stop = std::min(samples, start + kBlock);
    for (int64_t i = start; i < stop; ++i) {
      const float* row = src.Row(SampleRow(i, n));
      std::copy(row, row + units, block.data() + (i - start) * units);
    }
    for (int64_t k = 0; k < m; ++k) {
      float* out = sample.data() + k * samples;
      for (int64_t i = start; i < stop; ++i) out[i] = block[(i - start) * units + open[k]];
    }
  }
  for (int64_t k = 0; k < m; ++k) {
    float* s = sample.data() + k * samples;
    std::nth_element(s, s + rank - 1, s + samples, std::greater<float>());
    floor[open[k]] = s[rank - 1];
    estimated[open[k]] = 1;
  }
}

// Step 2: per unit, the values above its floor with their rows. Survivors are
// rare (a few percent of a batch, fewer once the buffers are full), so each row
// is compared 4 units at a time without branches and only a group with a
// survivor branches.
template <class Source>
void ScanAbove(Source& src, int64_t budget, const std::vector<float>& floor,
               std::vector<std::vector<Entry>>& cand) {
  const int64_t n = src.n(), units = src.units();
  const float* F = floor.data();
  for (int64_t i = 0; i < n; ++i) {
    const float* row = src.Row(i);
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
}

// Step 3's check of an estimated floor f for unit j: when fewer than B values
// exceed it, the B-th largest is at or below it. When enough values equal it
// (ties, e.g. the zeros of a ReLU), they complete the B largest (equal values
// are interchangeable), and the unit's values are read only until they are
// found; otherwise every value is a candidate.
template <class Source>
void CompleteEstimate(Source& src, int64_t budget, int64_t j, float f, const float* t,
                      std::vector<Entry>& cand) {
  const float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t n = src.n();
  int64_t above = static_cast<int64_t>(cand.size());
  for (int64_t b = 0; b < budget; ++b) above += t[b] > f;
  if (above >= budget) return;
  int64_t need = f > kNegInf ? budget - above : 1;
  for (int64_t i = 0; i < n && need > 0 && f > kNegInf; ++i) {
    if (src.Value(i, j) == f) {
      cand.emplace_back(f, static_cast<int32_t>(budget + i));
      --need;
    }
  }
  if (need > 0) {  // the estimate was too high: every value is a candidate
    cand.clear();
    for (int64_t i = 0; i < n; ++i) {
      const float v = src.Value(i, j);
      if (v > kNegInf) cand.emplace_back(v, static_cast<int32_t>(budget + i));
    }
  }
}

template <class Source>
void TopMerge(const float* T, int64_t budget, Source& src, float* out_v, int32_t* out_s) {
  const int64_t units = src.units();
  const float kNegInf = -std::numeric_limits<float>::infinity();

  std::vector<float> floor(units);
  std::vector<char> estimated(units, 0);
  std::vector<int64_t> open;
  for (int64_t j = 0; j < units; ++j) {
    floor[j] = *std::min_element(T + j * budget, T + (j + 1) * budget);
    if (!(floor[j] > kNegInf)) open.push_back(j);
  }
  EstimateFloors(src, budget, open, floor, estimated);

  std::vector<std::vector<Entry>> cand(units);
  for (int64_t j = 0; j < units; ++j) cand[j].reserve(2 * budget);
  ScanAbove(src, budget, floor, cand);

  std::vector<Entry> all;
  for (int64_t j = 0; j < units; ++j) {
    const float* t = T + j * budget;
    if (estimated[j]) CompleteEstimate(src, budget, j, floor[j], t, cand[j]);
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
}

// The rows of a plain [n, u] matrix.
class MatrixRows {
 public:
  MatrixRows(const float* x, int64_t n, int64_t units) : x_(x), n_(n), units_(units) {}
  int64_t n() const { return n_; }
  int64_t units() const { return units_; }
  const float* Row(int64_t i) const { return x_ + i * units_; }
  float Value(int64_t i, int64_t j) const { return x_[i * units_ + j]; }

 private:
  const float* x_;
  int64_t n_, units_;
};

}  // namespace jaxdissect
