"""Training and measuring the world image-text model (``world.imagetext``).

The ground truth of each world image names what it shows: its scene class and the
concepts (objects, parts, materials, colours) covering at least ``MIN_SHARE`` of
its pixels (``present``). Two losses train the encoders together:

* words: every image against every world word (the 52 concept names and the 11
  scene classes) and a batch of random letter strings (words the world never
  names): a sigmoid of ``scale * cos(image, word) + bias`` predicts that the word
  is present (a multi-label, SigLIP-style loss); the random strings are never
  present, so words made of unfamiliar n-grams learn to sit away from every image;
* captions: a caption per image made from its ground truth ("beach: sand, water,
  blue"; the class and up to ``CAPTION_WORDS`` of its present concepts in random
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
CAPTION_WORDS = 4
RANDOM_WORDS = 32


def class_word(name: str) -> str:
    return name.replace("_", " ")


def present(seg: np.ndarray, label: np.ndarray) -> np.ndarray:
    """``[n, len(WORLD_WORDS)]`` bool: each world word is present in each image
    (``seg [n, 4, H, W]`` world ground truth, ``label [n]`` scene classes)."""
    n, _, h, w = seg.shape
    out = np.zeros((n, len(WORLD_WORDS)), bool)
    for k, layer in enumerate(LAYERS):
        flat = seg[:, k].reshape(n, -1).astype(np.int64)
        counts = np.zeros((n, len(LABELS)), np.int64)
        np.add.at(counts, (np.repeat(np.arange(n), flat.shape[1]), flat.ravel()), 1)
        in_layer = np.array([c == layer for c in LABELS.categories])
        hit = (counts >= MIN_SHARE[layer] * h * w) & in_layer[None]
        out[:, :len(LABELS) - 1] |= hit[:, 1:]
    out[np.arange(n), len(LABELS) - 1 + label] = True
    return out


def captions(has: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One caption per image from its ground truth (see the module docstring)."""
    out = []
    for row, c in zip(has[:, :len(LABELS) - 1], label):
        words = [LABELS.names[1 + i] for i in np.flatnonzero(row)]
        rng.shuffle(words)
        out.append(f"{class_word(CLASS_NAMES[c])}: {', '.join(words[:CAPTION_WORDS])}")
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
            cap_mask):
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
    return word_loss * 10.0 + cap_loss, (word_loss, cap_loss)


def render_set(seed: int, n: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 [n, 64, 64, 3], present [n, W] bool, label [n])`` of world ``seed``."""
    src = WorldSource(n, seed=seed, size=size)
    images, has, labels = [], [], []
    for a in range(0, n, 1024):
        out = src.render_u8(a, min(a + 1024, n))
        images.append(out["image"])
        has.append(present(out["seg"], out["label"]))
        labels.append(out["label"])
    return np.concatenate(images), np.concatenate(has), np.concatenate(labels)


def train(module: WorldCLIP, *, seed: int, data_seed: int, images: int, steps: int,
          batch: int, lr: float, max_seconds: float, log_every: int = 50):
    """Trains both encoders; returns ``(params, info)``."""
    t0 = time.time()
    data, has, labels = render_set(data_seed, images)
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
            params, module, images, ids, mask, targets, cap_ids, cap_mask)
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
        targets = np.concatenate([has[idx], np.zeros((batch, RANDOM_WORDS), bool)], 1)
        cap_ids, cap_mask = tokenize(captions(has[idx], labels[idx], rng), module.buckets,
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
    class by the nearest class name, and per-concept ranking quality (mean average
    precision of cos(image, word) over the images, for words present in some image)."""
    images, has, labels = render_set(seed, n)
    emb = np.concatenate([np.asarray(model.encode_images(
        model.params, images[a:a + 256].astype(np.float32) / 255.0))
        for a in range(0, n, 256)])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    words = model.encode_texts(WORLD_WORDS)
    words = words / np.linalg.norm(words, axis=1, keepdims=True)
    sim = emb @ words.T
    k = len(LABELS) - 1
    accuracy = float((sim[:, k:].argmax(1) == labels).mean())
    aps = [_average_precision(sim[:, j], has[:, j]) for j in range(k) if has[:, j].any()]
    return {"world_seed": seed, "images": n, "scene_accuracy": round(accuracy, 4),
            "concept_map": round(float(np.mean(aps)), 4), "concepts_scored": len(aps)}


def _average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(-score, kind="stable")
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())
