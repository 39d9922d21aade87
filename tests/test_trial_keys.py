"""Trial keys that last: today's keys are pinned, so a refactor cannot silently re-run finished work.

A trial key is a promise that completed trials are never redone. These values were taken from the code
as it stood when the rule was written (2026-12-02). A test here fails when a change moves a key; that is
only right when the trial's *meaning* changed (a backbone trained differently), and then the pin is
updated in the same commit with the reason in its message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.datasets import resolve_datasets
from harness.expand import DatasetRef, expand, make_trial
from harness.keys import TrialSpec
from harness.study import load_study
from rearec.config import MethodConfig, ModelConfig, TrainConfig
from rearec.identity import Trial, key_view, setting

ROOT = Path(__file__).resolve().parent.parent

QUICKSTART_SYNTHETIC_HASH = "edaa0dc575366c90c0ba9a4eca87ec1439c16e82b4c7449ef2b4cf21d4e2ec21"
QUICKSTART_KEYS = [
    ("base", "4d80e3a6bb6a0d3a47567d067029cc5d09d03873d4a9b880de80cc85a8d6b9f8"),
    ("erl", "5b52f9c3ed78cabddc9c3bcb6e0786c965ab4491184cc5aaa67dd080017e7c29"),
    ("prl", "a715056dadf30e5c80ff278283b41372d64584b6a42a069e7351e4e98b6f38b9"),
]

# (backbone, method, settings on top of hidden_size 64, key) on a fixed dataset identity: covers every
# backbone, every method and both formulations independently of the study files.
FIXED_DATASET = DatasetRef(0, "amazon2023-video-games", {"name": "amazon2023-video-games"}, "0" * 64)
FIXED_KEYS = [
    ("sasrec", "base", {}, "bc691eac9f368a9c02e4a27643d3a740e2d9201000dd4a9e138e21f4bfb2820a"),
    ("sasrec", "naive", {'reasoning_steps': 2}, "33335465e81df08c4a788bbb0361659ede485286db94291b23a839fadd979663"),
    ("sasrec", "rpe", {'reasoning_steps': 2}, "058d88481794a50784c63474a87b93be01418675542ffeda3921272f5f353991"),
    ("sasrec", "erl", {'reasoning_steps': 2, 'kl_lambda': 0.01}, "e07fafc958ad0c6741df3d9bda54cffae1ad8256000555f0d3ca1ae612250ad5"),
    ("sasrec", "prl", {'reasoning_steps': 2, 'tau': 0.5, 'alpha': 5.0}, "5e337316ec04368b7ac6237e5735d26f05851ef7b4ba1ffc434e594a6faacd69"),
    ("sasrec", "prl", {'reasoning_steps': 3, 'rcl': False, 'formulation': 'released', 'training': 'packed'}, "4239fa56d4e10857406b4b9982e5c46eae9ee0ae78e54b9394271c0db5f47258"),
    ("bert4rec", "base", {}, "2aa75c1fa47697b8b5aba408cb5cd807999249fe8798d19d13888211d81c68d4"),
    ("bert4rec", "naive", {'reasoning_steps': 2}, "bf5dc54ae32ec4b01f192c6c872ed7fe8e7f4b4206c9ba864c9a66a066b55584"),
    ("bert4rec", "rpe", {'reasoning_steps': 2}, "65c16e0e80f0da31ddeaf751225047619b846cef80e4e4d6099a12d8a224d272"),
    ("bert4rec", "erl", {'reasoning_steps': 2, 'kl_lambda': 0.01}, "41674dc2361227bcc7c25190248759a391cd84f86ca99d197ef2b971cff51dfc"),
    ("bert4rec", "prl", {'reasoning_steps': 2, 'tau': 0.5, 'alpha': 5.0}, "ea6022a9239b5ca2f45025f692f11bbe9ffac4777a91070fa492ea4acac2df22"),
    ("bert4rec", "prl", {'reasoning_steps': 3, 'rcl': False, 'formulation': 'released'}, "6e58ced25e4cd89eb477aa3d1fb95a8e5cb2aba231f96f104a853dfa0d03ade3"),
    ("unisrec", "base", {}, "97fd54d114859ca3ca894e6a9308c0f5d037cb7c04ece944c86cfb58ae42abd1"),
    ("unisrec", "naive", {'reasoning_steps': 2}, "48fdf2a705464f5735c5b3e7086db2d7a6d134ef808621cdf577cdb5ee3dfe6c"),
    ("unisrec", "rpe", {'reasoning_steps': 2}, "63030a0af02db5a3da8aaaa77e4a42d53d6283fd406a0b3fdde1bc403d328ffd"),
    ("unisrec", "erl", {'reasoning_steps': 2, 'kl_lambda': 0.01}, "2b97ad1b9efb1a74a4ae40869e7c1d337073118d1ed4d0da9fcded490c1506f4"),
    ("unisrec", "prl", {'reasoning_steps': 2, 'tau': 0.5, 'alpha': 5.0}, "147e54c634710330049cb8dd71e3a611cf535ba779bcc043ff480629d0e6df21"),
    ("unisrec", "prl", {'reasoning_steps': 3, 'rcl': False, 'formulation': 'released', 'training': 'packed'}, "e6c14864bf3f1068cf1403a0a96568d4552334af4f23ed49d58a8df0fe4f261b"),
    ("morec", "base", {}, "5290ebebf7cb0ff53cc7ada5ad0e432ee4ce0ebb50d9ec9990078b0b4311decb"),
    ("morec", "naive", {'reasoning_steps': 2}, "adcf548fa27632d500dc077b9430a45707a5526fa90ebbebbffeabfae3828c78"),
    ("morec", "rpe", {'reasoning_steps': 2}, "e6624885d0cd221f30493445950cce7dff2a1e8bbbd60e67b28b909a51bfa4c6"),
    ("morec", "erl", {'reasoning_steps': 2, 'kl_lambda': 0.01}, "aaaac8e15168c1936fc79eaf476add1fc7e1ae246bf1f33fb98e23890a87b588"),
    ("morec", "prl", {'reasoning_steps': 2, 'tau': 0.5, 'alpha': 5.0}, "c6b1dde5def5d79b622c77a82bd601e05ed3a7246335975d8bf7486e688bd30e"),
    ("morec", "prl", {'reasoning_steps': 3, 'rcl': False, 'formulation': 'released', 'training': 'packed'}, "3c5a8aa003fa261cf5a6690763ea97bd8f03d6ecd785636403ee54b6b0299b2c"),
]


def test_quickstart_keys_are_pinned(tmp_path):
    study = load_study(ROOT / "studies/quickstart.yaml")
    refs = resolve_datasets(study, tmp_path, log=lambda *_: None)
    assert refs[0].content_hash == QUICKSTART_SYNTHETIC_HASH  # the embedded dataset is generated identically
    assert [(t.method["name"], t.key) for t in expand(study, refs)] == QUICKSTART_KEYS


@pytest.mark.parametrize("backbone, method, point, key", FIXED_KEYS,
                         ids=[f"{i}-{b}-{m}" for i, (b, m, _, _) in enumerate(FIXED_KEYS)])
def test_fixed_configuration_keys_are_pinned(backbone, method, point, key):
    trial = make_trial(FIXED_DATASET, backbone, method, {"hidden_size": 64, **point}, 0, "ndcg@20")
    assert trial.key == key


# ---- the rule (rearec/identity.py), with a field added here as a future change would add it -------------


@dataclasses.dataclass(frozen=True)
class GrownModelConfig(ModelConfig):
    """ModelConfig as it would be after a release adds three settings."""

    new_option: str = setting("old", legacy="old")  # 'old' reproduces what trials did before
    bert_only: int = setting(3, legacy=3, applies=lambda t: t.model.backbone == "bert4rec")
    speed_only: bool = setting(True, key=False)  # changes speed, never a result


def _key(model_cfg, method="prl", **method_kw):
    configs = Trial(model_cfg, MethodConfig(name=method, reasoning_steps=2, **method_kw), TrainConfig())
    return TrialSpec.build("d", {"name": "d"}, "0" * 64, configs)


def test_a_new_setting_at_its_legacy_value_keeps_old_keys():
    for backbone in ("sasrec", "bert4rec"):
        old = _key(ModelConfig(backbone=backbone))
        assert _key(GrownModelConfig(backbone=backbone)).key == old.key
        assert _key(GrownModelConfig(backbone=backbone, speed_only=False)).key == old.key
        assert _key(GrownModelConfig(backbone=backbone, new_option="new")).key != old.key
    # a setting that applies only to BERT4Rec enters BERT4Rec keys and never SASRec ones
    assert _key(GrownModelConfig(backbone="sasrec", bert_only=7)).key == _key(ModelConfig()).key
    assert _key(GrownModelConfig(backbone="bert4rec", bert_only=7)).key != _key(ModelConfig(backbone="bert4rec")).key


def test_stored_settings_hold_what_a_trial_reads_and_rebuild_it():
    spec = _key(GrownModelConfig(backbone="sasrec", new_option="new"))
    assert spec.model["new_option"] == "new" and spec.model["speed_only"] is True
    assert "bert_only" not in spec.model and "text_encoder" not in spec.model  # not read by SASRec
    assert "bert_only" in _key(GrownModelConfig(backbone="bert4rec")).model
    # the settings of a real trial rebuild its configs, and the key checks out on the way back
    trial = _key(ModelConfig(backbone="unisrec"))
    assert TrialSpec.from_dict(trial.to_dict()) == trial
    assert trial.configs().model == ModelConfig(backbone="unisrec")


def test_settings_added_after_the_pin_stay_out_of_keys_at_their_legacy_values():
    ident = key_view(Trial(ModelConfig(backbone="bert4rec", bert4rec_objective="next_item"),
                           MethodConfig(name="prl", reasoning_steps=2, rcl_similarity="dot", rcl_negatives="all"),
                           TrainConfig(training="packed")))
    assert "bert4rec_objective" not in ident["model"] and "item_scoring" not in ident["model"]
    assert "rcl_similarity" not in ident["method"] and "rcl_negatives" not in ident["method"]
    changed = key_view(Trial(ModelConfig(backbone="sasrec", item_scoring="cosine"),
                             MethodConfig(name="prl", reasoning_steps=2, rcl_similarity="cosine"), TrainConfig()))
    assert changed["model"]["item_scoring"] == "cosine" and changed["model"]["score_temperature"] == 0.07
    assert changed["method"]["rcl_similarity"] == "cosine" and "rcl_negatives" not in changed["method"]
