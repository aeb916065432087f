"""gan.export: a Hub folder that from_pretrained loads for every network family, TorchScript and ONNX
graphs that agree with G, and the bad inputs."""

import json

import pytest
import torch
from helpers import PYTHON, assert_user_error, base_env, run, snapshot

from gan import export
from gan.config import load_config
from gan.networks import build_networks

# one config per family, small; conditional where the family has a conditional variant
FAMILIES = {
    "mlp": ["model.network=mlp", "model.hidden_dim=32"],
    "dcgan": ["model.network=dcgan", "model.conditional=true", "model.g_channels=8", "model.d_channels=8"],
    "resnet": ["model.network=resnet", "model.conditional=true", "model.g_channels=8", "model.d_channels=8",
               "data.resolution=32"],
    "r3gan": ["model.network=r3gan", "model.conditional=true", "model.widths=[16,16,16]", "model.group_size=8",
              "model.d_norm=none", "loss.name=rpgan"],
}  # fmt: skip
NUM_CLASSES = 10


def family_generator(family: str):
    cfg = load_config(None, FAMILIES[family])
    torch.manual_seed(0)
    G, _ = build_networks(cfg, NUM_CLASSES)
    for module in G.modules():  # BatchNorm statistics that are not the initial 0 and 1
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    G.eval()
    G.num_classes, G.class_counts = NUM_CLASSES, list(range(1, NUM_CLASSES + 1))
    return G, cfg


def inputs(G, n: int = 5):
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(1))
    return z, torch.arange(n) % NUM_CLASSES


@pytest.mark.parametrize("family", FAMILIES)
def test_from_pretrained_rebuilds_every_family(tmp_path, family):
    G, cfg = family_generator(family)
    export.hub_model(G, cfg).save_pretrained(tmp_path)
    loaded = export.Generator.from_pretrained(tmp_path).eval()
    assert loaded.num_classes == NUM_CLASSES and loaded.class_counts == G.class_counts
    assert json.loads((tmp_path / "config.json").read_text())["run_config"]["model"]["network"] == family
    z, c = inputs(G)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, c), G(z, c), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_and_onnx_agree_with_G(tmp_path, family):
    G, _ = family_generator(family)
    z, c = inputs(G, n=7)  # another batch size than the one traced
    with torch.no_grad():
        expected = G(z, c)
    export.export_traced(G, tmp_path, "torchscript")
    scripted = torch.jit.load(str(tmp_path / "generator.pt"))
    torch.testing.assert_close(scripted(z, c), expected, rtol=0, atol=1e-4)
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e .[test])")
    pytest.importorskip("onnxscript", reason="onnxscript, which torch.onnx.export needs, is not installed")
    export.export_traced(G, tmp_path, "onnx")
    session = ort.InferenceSession(str(tmp_path / "generator.onnx"))
    (images,) = session.run(None, {"z": z.numpy(), "labels": c.numpy()})
    torch.testing.assert_close(torch.from_numpy(images), expected, rtol=0, atol=1e-4)


def test_the_command_and_its_bad_inputs(tmp_path, dcgan_run):
    out = tmp_path / "hub"
    proc = run([PYTHON, "-m", "gan.export", dcgan_run, "--out", out])
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "samples.png"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: gan\n") and "6 generator steps" in card
    # onto anything that exists and is not an empty folder: refused, nothing touched
    before = snapshot(out)
    again = run([PYTHON, "-m", "gan.export", dcgan_run, "--out", out, "--format", "torchscript"])
    assert_user_error(again, "exists and is not an empty folder")
    assert snapshot(out) == before
    a_file = tmp_path / "model.pt"
    a_file.write_text("mine")
    assert_user_error(run([PYTHON, "-m", "gan.export", dcgan_run, "--out", a_file]), "exists and is not an empty folder")
    assert a_file.read_text() == "mine"
    # --push without a network: one line, and the export stays for a later upload
    offline = dict(HF_HUB_OFFLINE="1", HF_TOKEN="hf_not_a_token")
    pushed = run([PYTHON, "-m", "gan.export", dcgan_run, "--out", tmp_path / "p", "--push", "me/gan"],
                 env=base_env(**offline))  # fmt: skip
    assert_user_error(pushed, "--push me/gan: the upload failed")
    assert (tmp_path / "p" / "model.safetensors").is_file()
    wrong = run([PYTHON, "-m", "gan.export", dcgan_run, "--out", tmp_path / "o", "--format", "onnx", "--push", "me/gan"])
    assert_user_error(wrong, "--push uploads a hub export")
    assert not (tmp_path / "o").exists()
