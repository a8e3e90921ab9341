"""``py:MODULE:FACTORY`` specs: the module is found in the current directory (as
``python -m`` finds it, though the ``jaxdissect`` script does not put the current
directory on the path), and every way of failing is one line naming it."""

import os
import sys

import pytest

from jaxdissect import cli
from jaxdissect.errors import UserError
from jaxdissect.pipeline.resolve import load_model, load_segmenter
from jaxdissect.spec import ModelSpec


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """``tmp_path`` as the current directory, which is not on ``sys.path`` (as when the
    ``jaxdissect`` script runs); modules written there are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path
                                      if p not in ("", ".", str(tmp_path), os.getcwd())])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and \
                str(sys.modules[name].__file__).startswith(str(tmp_path)):
            del sys.modules[name]


def write(directory, name, text):
    (directory / f"{name}.py").write_text(text)


def test_module_in_the_current_directory_is_found(user_dir):
    write(user_dir, "mymodels_here", "from tests.support.flax_models import tuple_classifier\n"
          "def factory():\n    return tuple_classifier()\n")
    path_before = list(sys.path)
    spec = load_model("py:mymodels_here:factory")
    assert isinstance(spec, ModelSpec) and spec.name == "tuple"
    assert sys.path == path_before           # the search left the path as it was
    write(user_dir, "myseg_here", "class Seg:\n    labels = ('-', 'a')\n")
    seg = load_segmenter("py:myseg_here:Seg", None)
    assert type(seg).__name__ == "Seg"


def error_line(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["dissect", "ablate", "attack"])
def test_missing_module_is_reported_missing(user_dir, capsys, command):
    err = error_line(capsys, [command, "--model", "py:no_such_module_xyz:factory"])
    assert "no module named 'no_such_module_xyz'" in err and str(user_dir) in err


def test_errors_inside_the_users_module_are_named(user_dir, capsys):
    write(user_dir, "raises_on_import", "raise RuntimeError('weights file missing')\n")
    err = error_line(capsys, ["dissect", "--model", "py:raises_on_import:f"])
    assert "importing 'raises_on_import' failed: RuntimeError: weights file missing" in err
    write(user_dir, "imports_missing", "import not_installed_dep_xyz\n")
    err = error_line(capsys, ["ablate", "--model", "py:imports_missing:f"])
    assert "importing 'imports_missing' failed: ModuleNotFoundError" in err
    assert "not_installed_dep_xyz" in err
    write(user_dir, "bad_factory", "def f():\n    raise ValueError('no such size')\n"
          "x = 3\n")
    err = error_line(capsys, ["intervene", "--model", "py:bad_factory:f"])
    assert "f() raised ValueError: no such size" in err
    err = error_line(capsys, ["paint", "--model", "py:bad_factory:g"])
    assert "module 'bad_factory'" in err and "has no 'g'" in err
    err = error_line(capsys, ["dissect", "--model", "py:bad_factory:x"])
    assert "gave a int, not a jaxdissect.spec.ModelSpec" in err
    with pytest.raises(UserError, match="expected py:MODULE:NAME"):
        load_model("py:nocolon")


def test_serve_loads_a_py_model_from_the_current_directory(user_dir, monkeypatch):
    """``serve --model py:...`` loads the model (``Dissection.live``) the same way."""
    import json

    from jaxdissect.app import live, results
    write(user_dir, "served_here", "from tests.support.flax_models import tuple_classifier\n"
          "def factory():\n    return tuple_classifier()\n")
    folder = user_dir / "dissection"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps({"model": "tuple", "units": []}))
    made = []
    monkeypatch.setattr(live, "make", lambda d, spec: made.append(spec) or "live")
    d = results.Dissection(str(user_dir), str(folder), "py:served_here:factory")
    assert d.live() == "live" and made[0].name == "tuple"
    missing = results.Dissection(str(user_dir), str(folder), "py:not_here_xyz:factory")
    with pytest.raises(LookupError, match="no module named 'not_here_xyz'"):
        missing.live()
