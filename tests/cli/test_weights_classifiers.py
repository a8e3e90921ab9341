"""``jaxdissect weights fetch`` of the shipped classifier entries against a loopback
HTTP server: each entry's file name, arch and hash rule as shipped, its content a
PyTorch model of the published layout (narrow or shallow where the converter reads
widths and depths from the file, so the test stays fast); the fetched, verified,
converted and cached model gives the torch model's logits, directly and as the model
spec that every command loads by the entry's name."""

import functools
import hashlib
import http.server
import json
import threading

import jax
import numpy as np
import pytest
import torch

from jaxdissect.checkpoints.architectures import as_variables
from jaxdissect.checkpoints.registry import load_registry
from jaxdissect.checkpoints.store import load_converted
from jaxdissect.cli import main
from jaxdissect.models.vgg16 import IMAGENET_MEAN, IMAGENET_STD
from jaxdissect.pipeline import load_model
from tests.support.torch_classifiers import (
    rel_err,
    run_hooked,
    save_places365_tar,
    torch_alexnet_reference,
    torch_oldresnet,
    torch_resnet,
    torch_vit,
)


def _save(model, path, zipped):
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zipped)


#: entry -> (torch model factory, writer of the published container, input size)
SERVED = {
    "alexnet_places365": (
        lambda: torch_alexnet_reference(seed=1, widths=(8, 16, 16, 16, 16), fc_width=16),
        lambda m, p: _save(m, p, False), 227),
    "resnet152_places365": (
        lambda: torch_oldresnet(depths=(1, 1, 2, 1), seed=2),
        lambda m, p: _save(m, p, True), 224),
    "resnet18_places365": (
        lambda: torch_resnet("basic", (2, 2, 2, 2), num_classes=365, seed=3),
        lambda m, p: save_places365_tar(m.state_dict(), p), 224),
    "resnet50_places365": (
        lambda: torch_resnet("bottleneck", (1, 1, 1, 1), num_classes=365, seed=4),
        lambda m, p: save_places365_tar(m.state_dict(), p), 224),
    "vit_b_16_imagenet": (
        lambda: torch_vit(seed=5, image_size=32, depth=2, mlp_dim=16, num_classes=10),
        lambda m, p: _save(m, p, True), 32),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    shipped = load_registry()["checkpoints"]
    root = tmp_path_factory.mktemp("served")
    models, entries = {}, {}
    for name, (make, write, _) in SERVED.items():
        entry = dict(shipped[name])
        models[name] = make()
        write(models[name], root / entry["file"])
        digest = hashlib.sha256((root / entry["file"]).read_bytes()).hexdigest()
        if entry["sha256_prefix"]:  # published with a hash: ours, of the same length
            entry["sha256_prefix"] = digest[: len(entry["sha256_prefix"])]
        entries[name] = entry
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    for entry in entries.values():
        entry["url"] = base + entry["file"]
    yield dict(models=models, entries=entries, shipped=shipped)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SERVED))
def test_fetch_converts_each_shipped_classifier(served, name, tmp_path, monkeypatch, capsys):
    registry = {"base_url": "http://127.0.0.1:9/", "checkpoints": served["entries"]}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    monkeypatch.setenv("JAXDISSECT_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("JAXDISSECT_CACHE", str(tmp_path / "cache"))
    assert main(["weights", "fetch", name, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    converted = tmp_path / "cache" / "converted" / name
    assert out.strip() == str(converted)
    hashed = served["shipped"][name]["sha256_prefix"] is not None
    assert ("verified" in err) if hashed else ("no published hash; length" in err)
    model, tree, meta = load_converted(converted)
    assert meta["arch"] == served["shipped"][name]["arch"]
    size = SERVED[name][2]
    x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
    logits = jax.jit(model.apply)(as_variables(meta["arch"], tree), x)
    assert rel_err(logits, run_hooked(served["models"][name], x, {})[0]) < 1e-4
    # The same entry as a command's --model: a spec taking images in [0, 1].
    spec = load_model(name)
    assert spec.name == name and spec.input_size == (size, size)
    assert spec.default_layer in spec.layer_names
    x01 = x * np.array(IMAGENET_STD, np.float32) + np.array(IMAGENET_MEAN, np.float32)
    out = jax.jit(lambda p, x: spec.run(p, x)[0])(spec.params, x01)
    assert rel_err(out, logits) < 1e-4
