"""The registries: names listed from the plugin packages' files without importing them (or torch),
one-line errors listing the legal names, and every listed plugin importing and registering itself."""

import sys
import textwrap

import pytest
from helpers import PYTHON, ROOT, run

from gan.config import load_config
from gan.errors import GanError
from gan.registry import AUGMENTATIONS, DATASETS, LOSSES, NETWORKS, Registry

REGISTRIES = {
    "model.network": NETWORKS,
    "loss.name": LOSSES,
    "data.name": DATASETS,
    "augment.policy": AUGMENTATIONS,
}


def test_loading_a_config_imports_neither_torch_nor_a_plugin():
    # A fresh interpreter: this test process has long imported torch. cgan_mnist names a network, a loss,
    # a data set and two augmentations, so every registry is asked.
    code = textwrap.dedent("""
        import sys
        from gan.config import load_config
        load_config("configs/cgan_mnist.yaml", ["model.network=resnet", "loss.name=wgan", "loss.gp_weight=10"])
        heavy = [m for m in sys.modules if m.split(".")[0] == "torch"]
        plugins = [m for m in sys.modules if m.startswith(("gan.networks", "gan.losses", "gan.datasets", "gan.augment"))]
        print(heavy, plugins)
    """)
    proc = run([PYTHON, "-c", code], cwd=ROOT, check=True)
    assert proc.stdout.strip() == "[] []"


@pytest.mark.parametrize("key", REGISTRIES)
def test_an_unknown_name_is_one_line_listing_the_legal_names(key):
    registry = REGISTRIES[key]
    value = "[nope]" if key == "augment.policy" else "nope"
    with pytest.raises(GanError) as err:
        load_config(None, [f"{key}={value}"])
    legal = ", ".join(registry.names())
    assert str(err.value) == f"{key}: unknown {registry.kind} 'nope'; choose one of: {legal}"
    with pytest.raises(GanError, match=f"^{key}: unknown {registry.kind} 'nope'; choose one of: {legal}$"):
        registry.get("nope", key)


def test_the_shipped_plugins_are_listed_and_the_helpers_are_not():
    # subsets: a new plugin file adds its name without touching this test
    assert {"dcgan", "mlp", "resnet"} <= set(NETWORKS.names())
    assert {"bce", "hinge", "lsgan", "wgan"} <= set(LOSSES.names())
    assert {"color", "cutout", "translation"} <= set(AUGMENTATIONS.names())
    assert {"mnist5k", "mnist", "fashion_mnist", "cifar10", "image_folder"} <= set(DATASETS.names())
    assert "_layers" not in NETWORKS.names()


@pytest.mark.parametrize("registry", REGISTRIES.values(), ids=REGISTRIES)
def test_every_listed_name_imports_and_registers_itself(registry):
    for name in registry.names():
        assert callable(registry.get(name)), name
        assert f"{registry.package}.{name}" in sys.modules


def test_a_new_file_is_a_new_name_and_helpers_are_not_plugins(tmp_path, monkeypatch):
    package = tmp_path / "widgets"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from gan.registry import Registry\n\nWIDGETS = Registry('widget', 'widgets')\n"
    )
    (package / "_shared.py").write_text("SIDE = 2\n")  # a helper of the kind: not a name
    (package / "square.py").write_text(
        textwrap.dedent("""
        from widgets import WIDGETS
        from widgets._shared import SIDE

        @WIDGETS.register("square")
        def square():
            return SIDE * SIDE
    """)
    )
    (package / "circle.py").write_text("# registers nothing: a programming error, not a user's\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert Registry("widget", "widgets").names() == ["circle", "square"]
        assert "widgets" not in sys.modules  # listing read the folder: not even the package was imported
        from widgets import WIDGETS

        assert WIDGETS.get("square")() == 4
        with pytest.raises(RuntimeError, match="widgets.circle does not register the widget 'circle'"):
            WIDGETS.get("circle")
        unknown = "^shape: unknown widget '_shared'; choose one of: circle, square$"
        with pytest.raises(GanError, match=unknown):
            WIDGETS.get("_shared", "shape")
    finally:  # the throw-away package leaves the import system with its folder
        for name in [m for m in sys.modules if m.split(".")[0] == "widgets"]:
            del sys.modules[name]
