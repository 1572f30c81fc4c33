import pytest

from deepfake.core.errors import RegistryError
from deepfake.orchestration.cli import main
from deepfake.orchestration.registry import LocalRegistry


@pytest.fixture()
def artifact(tmp_path):
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"model bytes")
    return path


def test_versions_start_pending_and_latest_approved_wins(tmp_path, artifact):
    reg = LocalRegistry(tmp_path / "reg")
    v1 = reg.register("g", artifact, {"video_auc": 0.91})
    v2 = reg.register("g", artifact, {"video_auc": 0.95})
    assert (v1.version, v2.version) == (1, 2)
    assert v1.status == "PendingManualApproval"
    with pytest.raises(RegistryError, match="no approved version"):
        reg.latest_approved("g")
    reg.approve("g", 1)
    assert reg.latest_approved("g").version == 1
    reg.approve("g", 2)
    reg.reject("g", 2)
    latest = reg.latest_approved("g")
    assert latest.version == 1 and latest.sha256 and latest.metrics["video_auc"] == 0.91


def test_tampered_artifact_and_unknown_version_are_errors(tmp_path, artifact):
    reg = LocalRegistry(tmp_path / "reg")
    mv = reg.register("g", artifact, {})
    reg.approve("g", mv.version)
    with open(mv.artifact, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(RegistryError, match="sha256"):
        reg.latest_approved("g")
    with pytest.raises(RegistryError, match="no version 7"):
        reg.approve("g", 7)
    with pytest.raises(RegistryError, match="no such file"):
        reg.register("g", tmp_path / "missing.tar.gz", {})


def test_cli_list_approve_reject(tmp_path, artifact, monkeypatch, capsys):
    monkeypatch.setenv("DEEPFAKE_REGISTRY", str(tmp_path / "reg"))
    first = LocalRegistry().register("deepfake-detector", artifact, {"video_auc": 0.93}, source={"run_id": "exp1"})
    other = tmp_path / "other.tar.gz"                                     # another model, the same AUC
    other.write_bytes(b"other model bytes")
    LocalRegistry().register("deepfake-detector", other, {"video_auc": 0.93}, source={"run_id": "exp2"})
    assert main(["registry", "approve", "1"]) == 0
    assert main(["registry", "list"]) == 0
    out = capsys.readouterr().out
    assert "Approved" in out and "0.9300" in out
    header, one, two = out.splitlines()[-3:]                              # told apart by run and sha256
    assert "run" in header.split() and "sha256" in header.split()
    assert " exp1 " in one and first.sha256[:12] in one and " exp2 " in two and first.sha256[:12] not in two
    assert main(["registry", "reject", "5"]) == 2
    assert "no version 5" in capsys.readouterr().err


def test_a_version_is_found_by_the_sha256_of_its_artifact(tmp_path, artifact):
    """What keeps a rerun of an unchanged pipeline from registering the same model again."""
    from deepfake.core.files import sha256_file

    reg = LocalRegistry(tmp_path / "reg")
    assert reg.find("g", sha256_file(artifact)) is None
    v1 = reg.register("g", artifact, {})
    assert reg.find("g", sha256_file(artifact)) == v1 and reg.find("other", v1.sha256) is None


def test_registrations_at_once_never_collide(tmp_path, artifact):
    """Four processes register at once, two models twice each: two versions, one per model."""
    import subprocess
    import sys

    other = tmp_path / "other.tar.gz"
    other.write_bytes(b"another model")
    code = ("import sys\nfrom deepfake.orchestration.registry import LocalRegistry\n"
            "LocalRegistry(sys.argv[1]).register_new('g', sys.argv[2], {'auc': 0.9})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "reg"), str(a)])
             for a in (artifact, other, artifact, other)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    versions = LocalRegistry(tmp_path / "reg").list("g")
    assert [v.version for v in versions] == [1, 2]
    assert len({v.sha256 for v in versions}) == 2
