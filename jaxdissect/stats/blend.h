// Bilinear upsampling by two-tap blends (stats/upsample.py, an Upsampler with
// taps): along x, then along y, each output is
//
//     Term(a[i0], w0) + Term(a[i1], w1),   Term(a, w) = w != 0 ? a * w : 0
//
// in float32, each product rounded before the sum (the library is built with
// -ffp-contract=off: no fused multiply-add), so NumPy's float32
// ``where(w0 != 0, a0 * w0, 0) + where(w1 != 0, a1 * w1, 0)`` gives the same bits,
// and so does every kernel here, whatever it computes the values for. A
// non-finite input is read as NaN (so it reaches exactly the outputs that weigh
// it).
//
// acts [images, h, w, u] f32, per axis the taps (index [2, size] s32: i0, i1;
// weight [2, size] f32: w0, w1) -> rows [images * H * W, u], row
// (image * H + y) * W + x.

#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace jaxdissect {

struct Taps {
  const int32_t* index;  // [2, size]
  const float* weight;   // [2, size]
  int64_t size;
  int32_t i0(int64_t t) const { return index[t]; }
  int32_t i1(int64_t t) const { return index[size + t]; }
  float w0(int64_t t) const { return weight[t]; }
  float w1(int64_t t) const { return weight[size + t]; }
};

inline float Term(float a, float w) { return w != 0.0f ? a * w : 0.0f; }

inline float Blend(float a0, float a1, float w0, float w1) {
  return Term(a0, w0) + Term(a1, w1);
}

// out[k] = Blend(a0[k], a1[k], w0, w1), k < n; the common case (both weights
// nonzero) written out so that it vectorises (the same operations per lane).
inline void BlendRow(const float* a0, const float* a1, float w0, float w1, float* out,
                     int64_t n) {
  if (w0 != 0.0f && w1 != 0.0f) {
    for (int64_t k = 0; k < n; ++k) out[k] = a0[k] * w0 + a1[k] * w1;
  } else {
    for (int64_t k = 0; k < n; ++k) out[k] = Blend(a0[k], a1[k], w0, w1);
  }
}

inline float Finite(float v) {
  return std::isfinite(v) ? v : std::numeric_limits<float>::quiet_NaN();
}

// The upsampled rows of a batch, image by image: an image's x-blend [h, W, u] is
// computed when its first row is asked for, each row [u] when asked for.
// Images with valid[image] == 0 (padding) give rows of -inf.
class UpsampledRows {
 public:
  UpsampledRows(const float* acts, const uint8_t* valid, int64_t images, int64_t h,
                int64_t w, int64_t units, Taps ty, Taps tx)
      : acts_(acts), valid_(valid), images_(images), h_(h), w_(w), units_(units),
        ty_(ty), tx_(tx), xblend_(h * tx.size * units), row_(units),
        padding_(units, -std::numeric_limits<float>::infinity()) {}

  int64_t n() const { return images_ * ty_.size * tx_.size; }
  int64_t units() const { return units_; }

  const float* Row(int64_t i) {
    const int64_t per_image = ty_.size * tx_.size;
    const int64_t image = i / per_image, y = (i % per_image) / tx_.size, x = i % tx_.size;
    if (valid_ != nullptr && !valid_[image]) return padding_.data();
    if (image != current_) XBlend(image);
    BlendRow(XRow(ty_.i0(y), x), XRow(ty_.i1(y), x), ty_.w0(y), ty_.w1(y), row_.data(),
             units_);
    return row_.data();
  }

  // Row(i)[j] alone, from the inputs.
  float Value(int64_t i, int64_t j) const {
    const int64_t per_image = ty_.size * tx_.size;
    const int64_t image = i / per_image, y = (i % per_image) / tx_.size, x = i % tx_.size;
    if (valid_ != nullptr && !valid_[image]) return -std::numeric_limits<float>::infinity();
    const float* a = acts_ + image * h_ * w_ * units_ + j;
    auto at = [&](int64_t r, int64_t c) { return Finite(a[(r * w_ + c) * units_]); };
    auto xb = [&](int64_t r) {
      return Blend(at(r, tx_.i0(x)), at(r, tx_.i1(x)), tx_.w0(x), tx_.w1(x));
    };
    return Blend(xb(ty_.i0(y)), xb(ty_.i1(y)), ty_.w0(y), ty_.w1(y));
  }

  // Writes every row of image `image` to out [H * W, u].
  void Image(int64_t image, float* out) {
    XBlend(image);
    for (int64_t y = 0; y < ty_.size; ++y) {
      for (int64_t x = 0; x < tx_.size; ++x) {
        BlendRow(XRow(ty_.i0(y), x), XRow(ty_.i1(y), x), ty_.w0(y), ty_.w1(y),
                 out + (y * tx_.size + x) * units_, units_);
      }
    }
  }

 private:
  const float* XRow(int64_t r, int64_t x) const {
    return xblend_.data() + (r * tx_.size + x) * units_;
  }

  void XBlend(int64_t image) {
    const int64_t size = h_ * w_ * units_;
    const float* a = acts_ + image * size;
    // Non-finite inputs (rare: a dissection refuses them) read as NaN, on a copy.
    bool finite = true;
    for (int64_t k = 0; k < size; ++k) finite &= std::isfinite(a[k]);
    if (!finite) {
      clean_.resize(size);
      for (int64_t k = 0; k < size; ++k) clean_[k] = Finite(a[k]);
      a = clean_.data();
    }
    for (int64_t r = 0; r < h_; ++r) {
      for (int64_t x = 0; x < tx_.size; ++x) {
        BlendRow(a + (r * w_ + tx_.i0(x)) * units_, a + (r * w_ + tx_.i1(x)) * units_,
                 tx_.w0(x), tx_.w1(x), xblend_.data() + (r * tx_.size + x) * units_,
                 units_);
      }
    }
    current_ = image;
  }

  const float* acts_;
  const uint8_t* valid_;
  int64_t images_, h_, w_, units_;
  Taps ty_, tx_;
  std::vector<float> xblend_, row_, padding_, clean_;
  int64_t current_ = -1;
};

}  // namespace jaxdissect
