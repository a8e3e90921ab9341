"""``jaxdissect weights`` against a loopback HTTP server: fetch verifies the hash,
converts and caches; a mismatch is refused with nothing cached; convert refuses bad
input with exit status 2 and a message naming the problem. Plus the registry's facts."""

import functools
import hashlib
import http.server
import json
import re
import threading

import numpy as np
import pytest
import torch

from jaxdissect.checkpoints.registry import load_registry
from jaxdissect.checkpoints.store import load_converted
from jaxdissect.cli import main
from tests.support.reference_torch import run_torch_proggan, torch_proggan

SIZES = (16, 16, 8)  # an 8x8 ProGAN: fast, same layout as the published ones


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    tm = torch_proggan(SIZES, seed=4)
    torch.save(tm.state_dict(), root / "tiny.pth", _use_new_zipfile_serialization=False)
    digest = hashlib.sha256((root / "tiny.pth").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield dict(url=f"http://127.0.0.1:{httpd.server_address[1]}/", torch=tm, digest=digest,
               root=root)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def env(server, tmp_path, monkeypatch):
    registry = {"base_url": server["url"], "checkpoints": {
        "tiny": {"file": "tiny.pth", "sha256_prefix": server["digest"][:8], "arch": "proggan",
                 "what": "test generator"},
        "tampered": {"file": "tiny.pth", "sha256_prefix": "00000000", "arch": "proggan",
                     "what": "hash does not match"},
        "absent": {"file": "absent.pth", "sha256_prefix": "12345678", "arch": "proggan",
                   "what": "404"}}}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    monkeypatch.setenv("JAXDISSECT_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.setenv("JAXDISSECT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) if path.exists() else []


def test_fetch_downloads_verifies_converts_and_caches(server, env, capsys):
    assert main(["weights", "fetch", "tiny"]) == 0  # with the progress bar
    out, err = capsys.readouterr()
    converted = env / "cache" / "converted" / "tiny"
    assert out.strip() == str(converted)
    assert "verified" in err
    assert (env / "cache" / "downloads" / "tiny.pth").is_file()
    model, params, meta = load_converted(converted)
    assert meta["source"]["sha256_prefix"] == server["digest"][:8]
    z = np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)
    img = model.apply({"params": params}, z)
    np.testing.assert_allclose(img, run_torch_proggan(server["torch"], z)[0], atol=1e-4)
    # A second fetch uses the cache.
    assert main(["weights", "fetch", "tiny", "--no-progress"]) == 0
    assert "cached" in capsys.readouterr().err


def test_hash_mismatch_is_refused_and_nothing_cached(env, capsys):
    assert main(["weights", "fetch", "tampered", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "SHA-256" in err and "00000000" in err and "nothing cached" in err
    assert [f for f in files_under(env / "cache") if f.endswith((".pth", ".part"))] == []
    assert not (env / "cache" / "converted" / "tampered").exists()


def test_fetch_errors_name_the_problem(env, capsys):
    assert main(["weights", "fetch", "absent", "--no-progress"]) == 2
    assert "absent.pth" in capsys.readouterr().err
    assert main(["weights", "fetch", "nosuch"]) == 2
    assert "unknown checkpoint 'nosuch'" in capsys.readouterr().err


def test_convert_local_file_and_bad_inputs(server, env, tmp_path, capsys):
    src = server["root"] / "tiny.pth"
    out = tmp_path / "out"
    assert main(["weights", "convert", str(src), "--arch", "proggan", "--out", str(out)]) == 0
    model, params, _ = load_converted(out)
    assert model.sizes == SIZES
    capsys.readouterr()
    assert main(["weights", "convert", str(src), "--arch", "proggan", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["weights", "convert", str(src), "--arch", "vgg16",
                 "--out", str(tmp_path / "o2")]) == 2
    assert "not a VGG-16 checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
    assert main(["weights", "convert", str(tmp_path / "missing.pth"), "--arch", "vgg16",
                 "--out", str(tmp_path / "o3")]) == 2
    assert "missing.pth" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(src.read_bytes()[:500])
    assert main(["weights", "convert", str(junk), "--arch", "proggan",
                 "--out", str(tmp_path / "o4")]) == 2
    assert "junk.pth" in capsys.readouterr().err
    assert main(["weights", "convert", str(src), "--arch", "resnet",
                 "--out", str(tmp_path / "o6")]) == 2
    assert "not a ResNet checkpoint" in capsys.readouterr().err
    assert main(["weights", "convert", str(src), "--arch", "resnet9",
                 "--out", str(tmp_path / "o5")]) == 2
    assert "'resnet9' is not a registered architecture" in capsys.readouterr().err
    assert not (tmp_path / "o5").exists()


def test_convert_reads_the_architecture_from_the_keys_and_safetensors(server, tmp_path):
    """Without --arch the file's keys name the architecture; a .safetensors file of the
    same tensors converts to the same arrays."""
    from safetensors.torch import save_file

    from jaxdissect.checkpoints.convert import flatten_params
    src = server["root"] / "tiny.pth"
    assert main(["weights", "convert", str(src), "--out", str(tmp_path / "a")]) == 0
    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in server["torch"].state_dict().items()}, str(st))
    assert main(["weights", "convert", str(st), "--out", str(tmp_path / "b")]) == 0
    (_, pa, ma), (_, pb, mb) = (load_converted(tmp_path / d) for d in "ab")
    assert ma["arch"] == mb["arch"] == "proggan" and ma["config"] == mb["config"]
    fa, fb = flatten_params(pa), flatten_params(pb)
    assert set(fa) == set(fb)
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_list_shows_entries_and_cache_state(env, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "tampered" in out and str(env / "cache") in out


def test_shipped_registry_has_every_published_checkpoint(monkeypatch):
    monkeypatch.delenv("JAXDISSECT_REGISTRY", raising=False)
    reg = load_registry()["checkpoints"]
    domains = ["bedroom", "churchoutdoor", "conferenceroom", "diningroom", "kitchen",
               "livingroom", "restaurant", "celebhq"]
    assert {f"proggan_{d}" for d in domains} <= set(reg)
    assert {"vgg16_places365", "alexnet_places365", "resnet152_places365"} <= set(reg)
    seg = {e["file"] for n, e in reg.items() if n.startswith("segmenter_")}
    assert seg == {f"segmodel/upp-resnet50-upernet/{f}" for f in
                   ("encoder_epoch_40.pth", "decoder_epoch_40.pth", "labels.json")} | {
        f"segmodel/color-resnet18dilated-ppm_deepsup/{f}" for f in
        ("encoder_epoch_20.pth", "decoder_epoch_20.pth", "labels.json")}
    elsewhere = {"resnet18_places365", "resnet50_places365", "resnet18_imagenet",
                 "resnet50_imagenet", "resnet152_imagenet", "alexnet_imagenet",
                 "vit_b_16_imagenet"}
    assert elsewhere <= set(reg)
    for name, e in reg.items():
        if name in elsewhere:  # published by their authors, not with the reference
            assert e["url"].endswith("/" + e["file"]) and "dissect.csail" not in e["url"]
        else:
            assert e["url"] == "https://dissect.csail.mit.edu/models/" + e["file"]
        m = re.search(r"-([0-9a-f]{8,})\.pth$", e["file"])
        assert e["sha256_prefix"] == (m.group(1) if m else None), name
    assert reg["vgg16_places365"]["arch"] == "vgg16"
    assert {n: reg[n]["arch"] for n in ("alexnet_places365", "resnet152_places365",
                                        "resnet18_places365", "resnet50_places365",
                                        "vit_b_16_imagenet")} == {
        "alexnet_places365": "alexnet", "resnet152_places365": "resnet",
        "resnet18_places365": "resnet", "resnet50_places365": "resnet",
        "vit_b_16_imagenet": "vit"}
    assert all(reg[f"proggan_{d}"]["arch"] == "proggan" for d in domains)
