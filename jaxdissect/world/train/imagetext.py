"""Training and measuring the world image-text model (``world.imagetext``).

The ground truth of each world image says what it shows and how much of it: its
scene class and the share of its pixels each concept (object, part, material,
colour) covers (``shares``); a concept is present when it covers at least
``MIN_SHARE`` (``present``). Two losses train the encoders together:

* words: every image against every world word (the 52 concept names and the 11
  scene classes) and a batch of random letter strings (words the world never
  names): a sigmoid of ``scale * cos(image, word) + bias`` predicts the word's
  graded target ``min(1, share / FULL_SHARE)`` (1 for the scene class; a
  multi-label, SigLIP-style loss with soft targets), so the similarity grows with
  how much of the image a concept covers, not only whether it is there; the random
  strings never are, so words made of unfamiliar n-grams learn to sit away from
  every image;
* captions: a caption per image made from its ground truth ("beach: sand, water,
  blue"; the class and its ``CAPTION_WORDS`` largest present concepts, in random
  order), contrasted with the other images of the batch both ways (CLIP's loss).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdissect.world.imagetext import WORLD_WORDS, WorldCLIP, init_params, tokenize
from jaxdissect.world.scenes import CLASS_NAMES
from jaxdissect.world.source import WorldSource
from jaxdissect.world.vocab import LABELS, LAYERS

#: a concept is present in an image when it covers at least this share of its pixels
MIN_SHARE = {"object": 0.005, "part": 0.005, "material": 0.005, "color": 0.05}
#: a concept covering this share of an image or more has word target 1
FULL_SHARE = 0.1
CAPTION_WORDS = 4
RANDOM_WORDS = 32


def class_word(name: str) -> str:
    return name.replace("_", " ")


def shares(seg: np.ndarray, label: np.ndarray) -> np.ndarray:
    """``[n, len(WORLD_WORDS)]`` float32: the share of each image's pixels each world
    concept covers in its own layer, and 1 for the image's scene class (``seg [n, 4,
    H, W]`` world ground truth, ``label [n]`` scene classes)."""
    n, _, h, w = seg.shape
    out = np.zeros((n, len(WORLD_WORDS)), np.float32)
    for k, layer in enumerate(LAYERS):
        flat = seg[:, k].reshape(n, -1).astype(np.int64)
        counts = np.zeros((n, len(LABELS)), np.int64)
        np.add.at(counts, (np.repeat(np.arange(n), flat.shape[1]), flat.ravel()), 1)
        in_layer = np.array([c == layer for c in LABELS.categories])
        out[:, :len(LABELS) - 1] += (counts * in_layer[None])[:, 1:] / (h * w)
    out[np.arange(n), len(LABELS) - 1 + label] = 1.0
    return out


def present(share: np.ndarray) -> np.ndarray:
    """``[n, W]`` bool: a concept is present where it covers at least its layer's
    ``MIN_SHARE`` (``share`` from :func:`shares`; the scene class always is)."""
    least = np.array([MIN_SHARE[c] for c in LABELS.categories[1:]]
                     + [1.0] * (len(WORLD_WORDS) - len(LABELS) + 1), np.float32)
    return share >= least[None]


def word_targets(share: np.ndarray) -> np.ndarray:
    """``[n, W]`` float32 in [0, 1]: ``min(1, share / FULL_SHARE)`` (scene class 1)."""
    return np.minimum(1.0, share / FULL_SHARE).astype(np.float32)


def captions(share: np.ndarray, label: np.ndarray, rng: np.random.Generator,
             largest: bool = True) -> list[str]:
    """One caption per image from its ground truth (see the module docstring; with
    ``largest`` False, any ``CAPTION_WORDS`` of its present concepts)."""
    out = []
    has = present(share)
    for row, hit, c in zip(share[:, :len(LABELS) - 1], has, label):
        present_ids = np.flatnonzero(hit[:len(LABELS) - 1])
        order = np.argsort(-row[present_ids], kind="stable") if largest else \
            rng.permutation(len(present_ids))
        largest_ids = present_ids[order[:CAPTION_WORDS]]
        words = [LABELS.names[1 + i] for i in largest_ids]
        rng.shuffle(words)
        out.append(f"{class_word(CLASS_NAMES[c])}: {', '.join(words)}")
    return out


def random_words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` strings of 3 to 9 random letters (not world words)."""
    out = []
    while len(out) < count:
        w = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(3, 10)))
        if w not in WORLD_WORDS:
            out.append(w)
    return out


def _normalise(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def loss_fn(params, module: WorldCLIP, images, word_ids, word_mask, targets, cap_ids,
            cap_mask, word_weight: float = 10.0):
    """Word loss (multi-label sigmoid) + caption loss (symmetric InfoNCE)."""
    img = _normalise(module.apply({"params": params["model"]}, images,
                                  method=WorldCLIP.images))
    words = _normalise(module.apply({"params": params["model"]}, word_ids, word_mask,
                                    method=WorldCLIP.texts))
    caps = _normalise(module.apply({"params": params["model"]}, cap_ids, cap_mask,
                                   method=WorldCLIP.texts))
    scale = jnp.exp(params["log_scale"])
    logits = scale * img @ words.T + params["bias"]
    word_loss = optax.sigmoid_binary_cross_entropy(logits, targets).mean()
    sim = scale * img @ caps.T
    labels = jnp.arange(img.shape[0])
    cap_loss = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(sim, labels).mean()
                      + optax.softmax_cross_entropy_with_integer_labels(sim.T, labels).mean())
    return word_loss * word_weight + cap_loss, (word_loss, cap_loss)


def render_set(seed: int, n: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 [n, 64, 64, 3], shares [n, W] float32, label [n])`` of world
    ``seed`` (:func:`shares`)."""
    src = WorldSource(n, seed=seed, size=size)
    images, share, labels = [], [], []
    for a in range(0, n, 1024):
        out = src.render_u8(a, min(a + 1024, n))
        images.append(out["image"])
        share.append(shares(out["seg"], out["label"]))
        labels.append(out["label"])
    return np.concatenate(images), np.concatenate(share), np.concatenate(labels)


def train(module: WorldCLIP, *, seed: int, data_seed: int, images: int, steps: int,
          batch: int, lr: float, max_seconds: float, graded: bool = True,
          word_weight: float = 10.0, log_every: int = 50):
    """Trains both encoders; returns ``(params, info)``. ``graded``: the graded word
    targets and captions of the largest concepts (False: present/absent targets and
    captions of any present concepts)."""
    t0 = time.time()
    data, share, labels = render_set(data_seed, images)
    targets_all = word_targets(share) if graded else present(share).astype(np.float32)
    render_s = time.time() - t0
    rng = np.random.default_rng(seed)
    params = {"model": init_params(module, seed), "log_scale": jnp.asarray(np.log(10.0),
                                                                          jnp.float32),
              "bias": jnp.asarray(-5.0, jnp.float32)}
    warmup = min(50, steps // 2)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, lr / 50)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=1e-4))
    state = opt.init(params)
    word_ids, word_mask = tokenize(WORLD_WORDS, module.buckets, module.max_ngrams)

    @jax.jit
    def step(params, state, images, ids, mask, targets, cap_ids, cap_mask):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, module, images, ids, mask, targets, cap_ids, cap_mask, word_weight)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss, parts

    done = 0
    for done in range(steps):
        if time.time() - t0 > max_seconds:
            break
        idx = rng.integers(0, len(data), batch)
        imgs = data[idx].astype(np.float32) / 255.0
        flip = rng.random(batch) < 0.5
        imgs[flip] = imgs[flip, :, ::-1]
        extra = random_words(rng, RANDOM_WORDS)
        e_ids, e_mask = tokenize(extra, module.buckets, module.max_ngrams)
        ids = np.concatenate([word_ids, e_ids])
        mask = np.concatenate([word_mask, e_mask])
        targets = np.concatenate([targets_all[idx], np.zeros((batch, RANDOM_WORDS))], 1)
        cap_ids, cap_mask = tokenize(captions(share[idx], labels[idx], rng, graded), module.buckets,
                                     module.max_ngrams)
        params, state, loss, (wl, cl) = step(params, state, imgs, ids, mask,
                                             targets.astype(np.float32), cap_ids, cap_mask)
        if log_every and done % log_every == 0:
            print(f"step {done} loss {float(loss):.4f} words {float(wl):.4f} "
                  f"captions {float(cl):.4f} ({time.time() - t0:.0f}s)", flush=True)
    info = {"steps_done": done + 1, "train_seconds": round(time.time() - t0, 1),
            "render_seconds": round(render_s, 1),
            "scale": float(jnp.exp(params["log_scale"])), "bias": float(params["bias"])}
    return params["model"], info


def zero_shot(model, seed: int, n: int) -> dict:
    """Held-out zero-shot accuracy of an ``ImageTextModel`` on world ``seed``: scene
    class by the nearest class name, per-concept ranking quality (mean average
    precision of cos(image, word) over the images, for words present in some image),
    and how well cos(image, word) follows the concept's pixel share (Spearman's rank
    correlation over the images, averaged over the concepts)."""
    images, share, labels = render_set(seed, n)
    has = present(share)
    emb = np.concatenate([np.asarray(model.encode_images(
        model.params, images[a:a + 256].astype(np.float32) / 255.0))
        for a in range(0, n, 256)])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    words = model.encode_texts(WORLD_WORDS)
    words = words / np.linalg.norm(words, axis=1, keepdims=True)
    sim = emb @ words.T
    k = len(LABELS) - 1
    accuracy = float((sim[:, k:].argmax(1) == labels).mean())
    scored = [j for j in range(k) if has[:, j].any()]
    aps = [_average_precision(sim[:, j], has[:, j]) for j in scored]
    rho = [_spearman(sim[:, j], share[:, j]) for j in scored]
    return {"world_seed": seed, "images": n, "scene_accuracy": round(accuracy, 4),
            "concept_map": round(float(np.mean(aps)), 4), "concepts_scored": len(aps),
            "share_spearman": round(float(np.mean(rho)), 4)}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, ranks)
    return (sums / counts)[inverse]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a) - (len(a) - 1) / 2, _ranks(b) - (len(b) - 1) / 2
    return float((ra * rb).sum() / np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))


def _average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-score, kind="stable")
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())
