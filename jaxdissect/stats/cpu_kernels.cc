// jaxdissect's native CPU kernels (XLA FFI), built by stats/native.py:
// the top-B merge (stats/select.py; the algorithm in top_merge.h), the
// two-tap upsampling (stats/upsample.py; blend.h), the top-B merge of upsampled
// maps without materialising them (stats/upsample_merge.py), and a radix-select
// histogram pass (stats/quantile.py).

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "blend.h"
#include "top_merge.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using jaxdissect::MatrixRows;
using jaxdissect::Taps;
using jaxdissect::TopMerge;
using jaxdissect::UpsampledRows;

// top [u, B] f32, x [n, u] f32 -> values [u, B] f32, src [u, B] s32 (top_merge.h).
ffi::Error TopMergeImpl(ffi::Buffer<ffi::F32> top, ffi::Buffer<ffi::F32> x,
                        ffi::ResultBuffer<ffi::F32> out_values,
                        ffi::ResultBuffer<ffi::S32> out_src) {
  auto td = top.dimensions();
  auto xd = x.dimensions();
  if (td.size() != 2 || xd.size() != 2 || xd[1] != td[0]) {
    return ffi::Error::InvalidArgument("top_merge needs top [u, B] and x [n, u]");
  }
  MatrixRows rows(x.typed_data(), xd[0], xd[1]);
  TopMerge(top.typed_data(), td[1], rows, out_values->typed_data(), out_src->typed_data());
  return ffi::Error::Success();
}

// The taps of one axis from index [2, size] s32 and weight [2, size] f32, or
// size 0 if their shapes are wrong or an index is outside [0, source).
Taps AxisTaps(ffi::Buffer<ffi::S32>& index, ffi::Buffer<ffi::F32>& weight, int64_t source) {
  auto d = index.dimensions();
  if (d.size() != 2 || d[0] != 2 || weight.dimensions().size() != 2 ||
      weight.dimensions()[0] != 2 || weight.dimensions()[1] != d[1] || d[1] < 1) {
    return Taps{nullptr, nullptr, 0};
  }
  const int32_t* idx = index.typed_data();
  for (int64_t k = 0; k < 2 * d[1]; ++k) {
    if (idx[k] < 0 || idx[k] >= source) return Taps{nullptr, nullptr, 0};
  }
  return Taps{idx, weight.typed_data(), d[1]};
}

// The taps of y and x for acts [..., h, w, u]; false on bad shapes or indices.
bool ActsAndTaps(ffi::Buffer<ffi::F32>& acts, ffi::Buffer<ffi::S32>& yi,
                 ffi::Buffer<ffi::F32>& yw, ffi::Buffer<ffi::S32>& xi,
                 ffi::Buffer<ffi::F32>& xw, Taps& ty, Taps& tx) {
  auto ad = acts.dimensions();
  if (ad.size() < 3) return false;
  const int64_t r = ad.size();
  ty = AxisTaps(yi, yw, ad[r - 3]);
  tx = AxisTaps(xi, xw, ad[r - 2]);
  return ty.size > 0 && tx.size > 0;
}

// acts [..., h, w, u] f32 (leading axes: images) -> out [..., H, W, u] f32.
ffi::Error UpsampleImpl(ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::S32> yi,
                        ffi::Buffer<ffi::F32> yw, ffi::Buffer<ffi::S32> xi,
                        ffi::Buffer<ffi::F32> xw, ffi::ResultBuffer<ffi::F32> out) {
  Taps ty, tx;
  if (!ActsAndTaps(acts, yi, yw, xi, xw, ty, tx)) {
    return ffi::Error::InvalidArgument("upsample: bad acts or taps");
  }
  auto ad = acts.dimensions();
  const int64_t r = ad.size(), h = ad[r - 3], w = ad[r - 2], units = ad[r - 1];
  int64_t images = 1;
  for (int64_t k = 0; k + 3 < r; ++k) images *= ad[k];
  UpsampledRows rows(acts.typed_data(), nullptr, images, h, w, units, ty, tx);
  float* o = out->typed_data();
  for (int64_t i = 0; i < images; ++i) rows.Image(i, o + i * ty.size * tx.size * units);
  return ffi::Error::Success();
}

// top [u, B] f32, acts [b, h, w, u] f32, valid [b] u8, taps -> values, src as
// TopMergeImpl's on the upsampled rows (padding images' rows: -inf).
ffi::Error TopMergeUpsampledImpl(ffi::Buffer<ffi::F32> top, ffi::Buffer<ffi::F32> acts,
                                 ffi::Buffer<ffi::U8> valid, ffi::Buffer<ffi::S32> yi,
                                 ffi::Buffer<ffi::F32> yw, ffi::Buffer<ffi::S32> xi,
                                 ffi::Buffer<ffi::F32> xw,
                                 ffi::ResultBuffer<ffi::F32> out_values,
                                 ffi::ResultBuffer<ffi::S32> out_src) {
  Taps ty, tx;
  auto td = top.dimensions();
  auto ad = acts.dimensions();
  if (td.size() != 2 || ad.size() != 4 || ad[3] != td[0] || valid.dimensions().size() != 1 ||
      valid.dimensions()[0] != ad[0] || !ActsAndTaps(acts, yi, yw, xi, xw, ty, tx)) {
    return ffi::Error::InvalidArgument(
        "top_merge_upsampled needs top [u, B], acts [b, h, w, u], valid [b] and taps");
  }
  UpsampledRows rows(acts.typed_data(), valid.typed_data(), ad[0], ad[1], ad[2], ad[3], ty,
                     tx);
  TopMerge(top.typed_data(), td[1], rows, out_values->typed_data(), out_src->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxdissectTopMerge, TopMergeImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxdissectUpsample, UpsampleImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxdissectTopMergeUpsampled, TopMergeUpsampledImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
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
