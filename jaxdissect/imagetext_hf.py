"""A Hugging Face ``transformers`` CLIP as an image-text model (``jaxdissect.imagetext``).

``load_hf_clip("openai/clip-vit-base-patch32")`` (a hub name in the local cache, or a
folder written by ``save_pretrained``) reads the ``CLIPModel``, its tokenizer and its
image processor's settings, and returns a :class:`TorchCLIP`:

* ``encode_images(params, images01)``: the model's own preprocessing in JAX (shortest
  edge resized to the processor's ``size`` with its resampling, centre crop to its
  ``crop_size``, its ``image_mean`` / ``image_std``), then the vision tower and its
  projection (``get_image_features``) run as a JAX function through the PyTorch bridge
  (``torch_bridge.torch_call``), its weights (``params``) an argument of the compiled
  step;
* ``encode_texts(texts)``: the model's tokenizer (padded, truncated to its context)
  and ``get_text_features``, in PyTorch, once per concept list.

Resizing is ``jax.image.resize`` (antialiased when shrinking), not PIL's, so an image
that must be resized gives embeddings close to, not bit-equal with, the processor's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdissect.errors import UserError

#: PIL resampling codes of an image processor -> jax.image.resize methods
_RESAMPLE = {0: "nearest", 2: "linear", 3: "cubic"}
#: OpenAI CLIP's normalisation (a model folder without an image processor)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """A CLIP image processor's settings: ``shortest_edge`` (None: no resize),
    ``crop`` ``(h, w)`` (None: no crop), ``method`` (``jax.image.resize``), ``mean``,
    ``std``."""

    shortest_edge: int | None
    crop: tuple[int, int] | None
    method: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_processor(cls, proc) -> "Preprocess":
        size = getattr(proc, "size", None) or {}
        edge = size.get("shortest_edge") if getattr(proc, "do_resize", True) else None
        if edge is None and "height" in size and getattr(proc, "do_resize", True):
            edge = min(size["height"], size["width"])
        crop = None
        if getattr(proc, "do_center_crop", False):
            c = proc.crop_size
            crop = (int(c["height"]), int(c["width"]))
        method = _RESAMPLE.get(int(getattr(proc, "resample", 3)), "cubic")
        mean, std = (proc.image_mean, proc.image_std) if getattr(proc, "do_normalize", True) \
            else ((0.0,) * 3, (1.0,) * 3)
        return cls(None if edge is None else int(edge), crop, method,
                   tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def __call__(self, images01):
        """``[b, H, W, 3]`` in [0, 1] -> the model's ``[b, h, w, 3]`` input (NHWC)."""
        x = jnp.asarray(images01, jnp.float32)
        b, h, w, _ = x.shape
        if self.shortest_edge is not None and min(h, w) != self.shortest_edge:
            scale = self.shortest_edge / min(h, w)
            h, w = (self.shortest_edge, round(w * scale)) if h <= w else \
                (round(h * scale), self.shortest_edge)
            x = jax.image.resize(x, (b, h, w, 3), self.method)
        if self.crop is not None:
            ch, cw = self.crop
            if ch > h or cw > w:
                raise ValueError(f"images of {h}x{w} are smaller than the crop {ch}x{cw}")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[:, top:top + ch, left:left + cw]
        return (x - jnp.asarray(self.mean).reshape(1, 1, 1, 3)) / \
            jnp.asarray(self.std).reshape(1, 1, 1, 3)


def _features(out):
    """``get_*_features``' projected embeddings (a tensor, or an output whose
    ``pooler_output`` holds them)."""
    return out if hasattr(out, "shape") else out.pooler_output


def _image_tower(clip):
    import torch

    class ImageTower(torch.nn.Module):
        """``CLIPModel.get_image_features`` with only the weights it reads."""

        def __init__(self):
            super().__init__()
            self.vision_model = clip.vision_model
            self.visual_projection = clip.visual_projection

        def forward(self, pixel_values):
            out = self.vision_model(pixel_values=pixel_values, return_dict=True)
            return self.visual_projection(out.pooler_output)

    return ImageTower()


@dataclasses.dataclass(frozen=True, eq=False)
class TorchCLIP:
    """A ``transformers`` ``CLIPModel`` as an ``ImageTextModel``; see the module
    docstring. ``params``: the vision tower's and projection's weights by state-dict
    name (JAX arrays); ``image_call``: the tower as ``torch_bridge.torch_call`` runs it."""

    clip: Any
    tokenizer: Any
    preprocess: Preprocess
    params: dict
    image_call: Any
    name: str
    text_batch: int = 256

    @classmethod
    def from_model(cls, clip, tokenizer, processor=None, name: str = "hf-clip"
                   ) -> "TorchCLIP":
        """From a loaded ``CLIPModel``, its tokenizer and (optional) image processor
        (without one: resize and crop to the model's ``image_size``, OpenAI's mean/std)."""
        from jaxdissect.torch_bridge import torch_call, torch_params
        if processor is None:
            size = int(clip.config.vision_config.image_size)
            pre = Preprocess(size, (size, size), "cubic", CLIP_MEAN, CLIP_STD)
        else:
            pre = Preprocess.from_processor(processor)
        clip.eval()
        tower = _image_tower(clip)
        return cls(clip, tokenizer, pre, torch_params(tower),
                   torch_call(tower, image_input=True), name)

    def encode_images(self, params, images01):
        """``[b, H, W, 3]`` in [0, 1] -> ``[b, D]`` (a JAX function; jit-able)."""
        out, _ = self.image_call(params, self.preprocess(images01))
        return out

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``[M, D]`` float32: ``get_text_features`` of the tokenized ``texts``."""
        import torch
        texts = list(texts)
        out = []
        with torch.no_grad():
            for a in range(0, len(texts), self.text_batch):
                tok = self.tokenizer(texts[a:a + self.text_batch], padding=True,
                                     truncation=True, return_tensors="pt")
                feats = self.clip.get_text_features(input_ids=tok["input_ids"],
                                                    attention_mask=tok["attention_mask"])
                out.append(_features(feats).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def load_hf_clip(name: str) -> TorchCLIP:
    """A ``transformers`` CLIP by hub name (from the local cache, or downloaded where
    the hub can be reached) or ``save_pretrained`` folder; a ``UserError`` naming the
    problem if it cannot be read."""
    try:
        from jaxdissect.torch_compat import torchvision
        torchvision()        # transformers imports torchvision; it must load through here
        import transformers
    except ImportError as e:
        raise UserError(f"image-text model hf:{name}: needs transformers and torch "
                        f"(pip install 'jaxdissect[clip]'): {e}") from None
    try:
        clip = transformers.CLIPModel.from_pretrained(name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"image-text model hf:{name}: cannot load a CLIPModel and its "
                        f"tokenizer ({first})") from None
    try:
        processor = transformers.CLIPImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        processor = None
    return TorchCLIP.from_model(clip, tokenizer, processor, name=f"hf:{name}")
