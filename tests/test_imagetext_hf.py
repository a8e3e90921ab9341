"""The Hugging Face CLIP adapter (``jaxdissect.imagetext_hf``) on a randomly initialised
tiny ``CLIPModel`` saved with its tokenizer and image processor: its embeddings against
the torch module's own ``get_image_features`` / ``get_text_features``, through
``load_imagetext("hf:FOLDER")`` and the ``describe`` command."""

import importlib.util
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("torchax") is None or \
        importlib.util.find_spec("transformers") is None:
    pytest.skip("the CLIP adapter needs torchax and transformers", allow_module_level=True)

from jaxdissect import cli  # noqa: E402
from jaxdissect.errors import UserError  # noqa: E402
from jaxdissect.imagetext import load_imagetext  # noqa: E402
from jaxdissect.torch_compat import torchvision  # noqa: E402

SIZE = 32


def _byte_chars():
    """GPT-2's byte -> printable character table, which CLIP's BPE vocabulary uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return list(out.values())


def tiny_clip(folder):
    """A random CLIPModel with a character-level CLIP tokenizer (no merges) and a
    32 x 32 image processor, saved in ``folder``; returns the torch model."""
    torchvision()
    import transformers
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    end = vocab["<|endoftext|>"]
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=40, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=end, pad_token_id=end),
        vision_config=dict(image_size=SIZE, patch_size=8, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    transformers.CLIPImageProcessor(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE},
        image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]).save_pretrained(str(folder))
    return model


def _features(out):
    return (out if hasattr(out, "shape") else out.pooler_output).numpy()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return folder, tiny_clip(folder), load_imagetext(f"hf:{folder}")


@pytest.mark.slow
def test_image_embeddings_are_the_torch_modules(clip):
    """The adapter's JAX image path (the processor's normalisation, the vision tower
    through the PyTorch bridge, jitted) against ``get_image_features`` of what the
    model's own image processor makes of the same images."""
    import transformers
    folder, model, adapter = clip
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    got = np.asarray(jax.jit(adapter.encode_images)(adapter.params,
                                                    u8.astype(np.float32) / 255))
    processor = transformers.CLIPImageProcessor.from_pretrained(str(folder))
    pixels = processor(images=list(u8), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = _features(model.get_image_features(pixel_values=pixels))
    assert got.shape == (3, 16)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # a larger image is resized (shortest edge, then centre crop) before the tower
    big = rng.random((2, 48, 40, 3), dtype=np.float32)
    assert np.asarray(adapter.encode_images(adapter.params, big)).shape == (2, 16)


def test_text_embeddings_are_the_torch_modules_and_padding_free(clip):
    import transformers
    folder, model, adapter = clip
    texts = ["sky", "ski resort", "a much longer concept phrase"]
    got = adapter.encode_texts(texts)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        want = np.stack([_features(model.get_text_features(**tok([t], return_tensors="pt")))[0]
                         for t in texts])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got.dtype == np.float32


def test_bad_names_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="names no model"):
        load_imagetext("hf:")
    with pytest.raises(UserError, match="cannot load a CLIPModel"):
        load_imagetext(f"hf:{tmp_path}")


@pytest.mark.slow
def test_describe_command_runs_a_hf_clip(clip, tmp_path, capsys):
    folder, _, _ = clip
    words = tmp_path / "words.txt"
    words.write_text("sky\ngrass\nwater\n")
    out = tmp_path / "res"
    assert cli.main(["describe", "--model", "world", "--num-images", "16", "--top-k", "4",
                     "--batch-size", "8", "--concepts", str(words), "--imagetext",
                     f"hf:{folder}", "--no-dissect", "--out", str(out),
                     "--no-progress"]) == 0
    summary = json.loads((out / "describe.json").read_text())
    assert summary["imagetext"] == f"hf:{folder}"
    assert {u["label"] for u in summary["units"]} <= {"sky", "grass", "water"}
