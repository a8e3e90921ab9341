"""TensorFlow Datasets' ``places365_small`` (or any tfds image-classification set) as
an ``ImageSource``; needs ``pip install jaxdissect[datasets]``.

tfds is imported only when a source is made, so jaxdissect runs without it. Images
are resized to 256x256 and centre-cropped to 224 as for ``ImageFolderSource``. The
split is read into memory once, in order, so ``batch`` is random-access and
deterministic; keep ``num_examples`` modest.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


class TFDSSource:
    seg_labels = None

    def __init__(self, name: str = "places365_small", split: str = "validation",
                 num_examples: int | None = None, data_dir: str | None = None,
                 resize: int = 256, crop: int = 224):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise ImportError(
                "the tfds data source needs tensorflow-datasets: pip install "
                "'jaxdissect[datasets]' (or use --data world or an image folder)") from None
        sl = split if num_examples is None else f"{split}[:{int(num_examples)}]"
        ds, info = tfds.load(name, split=sl, data_dir=data_dir, with_info=True,
                             as_supervised=True)
        off = (resize - crop) // 2
        images, labels = [], []
        for img, lab in tfds.as_numpy(ds):
            im = Image.fromarray(img).convert("RGB").resize((resize, resize), Image.BILINEAR)
            images.append(np.asarray(im, np.uint8)[off:off + crop, off:off + crop])
            labels.append(int(lab))
        if not images:
            raise ValueError(f"tfds {name}:{sl} is empty")
        self._identity = {"source": "tfds", "name": name, "split": sl,
                          "data_dir": data_dir, "version": str(info.version),
                          "resize": resize, "crop": crop}
        self.images, self.labels = np.stack(images), np.array(labels, np.int32)
        self.num_examples = len(labels)
        self.class_names = tuple(info.features["label"].names)

    def identity(self) -> dict:
        """Data set, version, split and preprocessing (for content-keyed caches)."""
        return {**self._identity, "num_examples": self.num_examples}

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if not 0 <= start <= stop <= self.num_examples:
            raise IndexError(f"range [{start}, {stop}) outside 0..{self.num_examples}")
        return {"image": self.images[start:stop].astype(np.float32) / 255.0,
                "label": self.labels[start:stop]}
