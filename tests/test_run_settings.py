"""Run settings: every profile is made of parameters its notebooks declare; the SBI profile is the paper's recipe."""

from __future__ import annotations

import pytest

from deepfake.orchestration.run_settings import PROFILES, step_parameters
from deepfake.stages.train import TrainConfig


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_names_parameters_its_notebooks_declare(profile, tmp_path):
    params = step_parameters(tmp_path / "data", tmp_path / "run", profile, {})
    for step, settings in PROFILES[profile].items():
        assert {k: params[step][k] for k in settings} == dict(settings)


def test_the_sbi_profile_is_the_published_recipe():
    """Shiohara & Yamasaki (CVPR 2022) and their code: EfficientNet-B4 (AdvProp) at 380 px, batches of 16 reals and
    their 16 self-blends, SAM over SGD at lr 0.001 with momentum 0.9, 100 epochs with a linear decay from epoch 75."""
    config = TrainConfig.from_dict(PROFILES["sbi"]["train"])
    assert (config.backbone, config.image_size, config.batch_size, config.mode) == ("efficientnet-b4", 380, 32,
                                                                                     "self_blend")
    assert (config.optimizer, config.lr, config.momentum, config.sam_rho, config.weight_decay) == ("sam", 0.001, 0.9,
                                                                                                 0.05, 0.0)
    assert (config.epochs, config.lr_schedule, config.warmup_epochs, config.patience) == (100, "constant_linear",
                                                                                          0.0, 0)
    assert config.unfreeze_blocks == -1 and config.backbone_lr_mult == 1.0 and config.label_smoothing == 0.0
    assert not config.amp       # SBI trains in float32; SAM refuses float16 AMP (a T4 has no bfloat16)
    assert PROFILES["sbi"]["extract"]["frames_per_video"] == 32
