// jaxdissect: the CPU top-B merge as an XLA FFI kernel (see stats/select.py).
//
// top [u, B] f32 (any order, -inf = empty), x [n, u] f32 (pixels by units)
//   -> values [u, B] f32: each unit's B largest of top and x,
//      src [u, B] s32: src < B is top's column, src >= B is x's row src - B.
//
// 1. A floor per unit with at least B values of the union strictly above it, or
//    -inf: the buffer's minimum once it is full; otherwise the r-th largest of
//    every 8th row (r = ceil(1.25 B / 8) + 16), verified by the count of step 2
//    and dropped (the unit rescanned with -inf) when it fails.
// 2. One row-major scan of x keeps, per unit, the values above its floor.
// 3. Per unit, nth_element over the buffer and its survivors keeps the B largest.
// NaN values are not supported (as everywhere in jaxdissect's statistics).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Entry = std::pair<float, int32_t>;

constexpr int64_t kStride = 8;

bool Greater(const Entry& a, const Entry& b) { return a.first > b.first; }

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

  // 2. survivors, one row-major scan
  std::vector<std::vector<Entry>> cand(units);
  for (int64_t j = 0; j < units; ++j) cand[j].reserve(2 * budget);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = X + i * units;
    for (int64_t j = 0; j < units; ++j) {
      if (row[j] > floor[j]) cand[j].emplace_back(row[j], static_cast<int32_t>(budget + i));
    }
  }

  // 3. per unit: buffer + survivors, keep the B largest
  std::vector<Entry> all;
  for (int64_t j = 0; j < units; ++j) {
    const float* t = T + j * budget;
    if (estimated[j]) {
      int64_t above = static_cast<int64_t>(cand[j].size());
      for (int64_t b = 0; b < budget; ++b) above += t[b] > floor[j];
      if (above < budget) {  // the estimate was too high: every value is a candidate
        cand[j].clear();
        for (int64_t i = 0; i < n; ++i) {
          const float v = X[i * units + j];
          if (v > kNegInf) cand[j].emplace_back(v, static_cast<int32_t>(budget + i));
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
