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
# prl moved with issue 14.3 (packed RCL keeps own-user prefixes out of the negatives: rcl_negatives
# 'other_users'); the UniSRec rows below moved with issue 14.2 (UniSRec scores by cosine / 0.07).
QUICKSTART_KEYS = [
    ("base", "4d80e3a6bb6a0d3a47567d067029cc5d09d03873d4a9b880de80cc85a8d6b9f8"),
    ("erl", "5b52f9c3ed78cabddc9c3bcb6e0786c965ab4491184cc5aaa67dd080017e7c29"),
    ("prl", "0a331ff67beef325b8565b4e18116d895255d55dc9e46d019a027dc1ec7b791c"),
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
    ("bert4rec", "base", {'bert4rec_objective': 'next_item'}, "2aa75c1fa47697b8b5aba408cb5cd807999249fe8798d19d13888211d81c68d4"),
    ("bert4rec", "naive", {'reasoning_steps': 2, 'bert4rec_objective': 'next_item'}, "bf5dc54ae32ec4b01f192c6c872ed7fe8e7f4b4206c9ba864c9a66a066b55584"),
    ("bert4rec", "rpe", {'reasoning_steps': 2, 'bert4rec_objective': 'next_item'}, "65c16e0e80f0da31ddeaf751225047619b846cef80e4e4d6099a12d8a224d272"),
    ("bert4rec", "erl", {'reasoning_steps': 2, 'kl_lambda': 0.01, 'bert4rec_objective': 'next_item'}, "41674dc2361227bcc7c25190248759a391cd84f86ca99d197ef2b971cff51dfc"),
    ("bert4rec", "prl", {'reasoning_steps': 2, 'tau': 0.5, 'alpha': 5.0, 'bert4rec_objective': 'next_item'}, "ea6022a9239b5ca2f45025f692f11bbe9ffac4777a91070fa492ea4acac2df22"),
    ("bert4rec", "prl", {'reasoning_steps': 3, 'rcl': False, 'formulation': 'released', 'bert4rec_objective': 'next_item'}, "6e58ced25e4cd89eb477aa3d1fb95a8e5cb2aba231f96f104a853dfa0d03ade3"),
    # BERT4Rec's default objective became cloze (issue 14.1): its trials are new computations with new
    # keys, and the pins above keep their pre-cloze keys under bert4rec_objective: next_item
    ("bert4rec", "base", {'clean_ratio': 0.0}, "48c8093bdcbd9440c0e398aec05d717a59d342b354358f3b61268a30af86b5ae"),
    ("bert4rec", "naive", {'reasoning_steps': 2, 'clean_ratio': 0.0}, "462f91c316ec60d0af440411e11f16cd6caf98533c6739f24a340c51564c6b96"),
    ("bert4rec", "rpe", {'reasoning_steps': 2, 'clean_ratio': 0.0}, "6c756df29e83faf2a5854da01bf465ca299a3e7e9b98cc2260074c509a813b91"),
    ("bert4rec", "erl", {'reasoning_steps': 2, 'kl_lambda': 0.01, 'clean_ratio': 0.0}, "596c7c2af1021e401f71510686b606d3cd77873e85b04a6db2d3c50fd30c57e7"),
    ("bert4rec", "prl", {'reasoning_steps': 2, 'tau': 0.5, 'alpha': 5.0, 'clean_ratio': 0.0}, "f97d1ce902ab9d7d9fa23210acd99e4bb05fe41c13f212df32dfa7461391e571"),
    ("bert4rec", "prl", {'reasoning_steps': 3, 'rcl': False, 'formulation': 'released', 'clean_ratio': 0.0}, "89d8670877801a7d3a7ada4129bc9edcfc3d6241eaca4a037a8f981464e013ec"),
    # Clean rows (issue 14, Sun et al. §3.6: clean_ratio, default 0.5) changed what a default cloze trial
    # computes: the cloze pins above keep their keys under clean_ratio: 0.0, these are the new defaults
    ("bert4rec", "base", {}, "2c8519dd2711a6e5145b69e65c3dac8f3303a885840ddb14b4d36490b77e216c"),
    ("bert4rec", "naive", {'reasoning_steps': 2}, "7e4b31e2577292ea7ccafb76e26f31e88165c853b4cc6de468390ec444cd3c60"),
    ("bert4rec", "rpe", {'reasoning_steps': 2}, "af5493a8f5da4bfa60d1dfce879fdcf28a3357602aacb5b1a4f6da7e63e45c36"),
    ("bert4rec", "erl", {'reasoning_steps': 2, 'kl_lambda': 0.01}, "d6e857cc01c84e9f1bca1242f3c99a96ae0d3e1c5e55127463a0cf909628a1b6"),
    ("bert4rec", "prl", {'reasoning_steps': 2, 'tau': 0.5, 'alpha': 5.0}, "38026820f6fbc6c44fd049656cf7c4ed16ef93e288567e990a6c1d6d7cfb96c6"),
    ("bert4rec", "prl", {'reasoning_steps': 3, 'rcl': False, 'formulation': 'released'}, "ea0eb8c1b7cfcefc62fc1bc3c6d1f168dd7b0efd546780bfa0c731bf3ad01520"),
    ("unisrec", "base", {}, "7742df6b0f2c60e192f61f3689cbae1173475c786e5744c34af044bf9ac1b7ce"),
    ("unisrec", "naive", {'reasoning_steps': 2}, "cd328ca01afda255c9f1dcb5b35882d6965339c6c133752ac00e73b00614ebbd"),
    ("unisrec", "rpe", {'reasoning_steps': 2}, "0ac35909e021c806bc40bdf4a12abc4800a6984472feef9a896e7d85e61907e8"),
    ("unisrec", "erl", {'reasoning_steps': 2, 'kl_lambda': 0.01}, "502ab4702630d8a8c4373e5d40e2b49c4cadb9eb1fc204e3d8ba9c834711a0e9"),
    ("unisrec", "prl", {'reasoning_steps': 2, 'tau': 0.5, 'alpha': 5.0}, "05a6cca558421d1ef160cd747199d26ae442ddc4dd761189e3771a9e7f309d86"),
    ("unisrec", "prl", {'reasoning_steps': 3, 'rcl': False, 'formulation': 'released', 'training': 'packed'}, "b2bec2923a00b2a05f0bc58cf3c478d45b7047ae74e83789a03c1abf992cc5d3"),
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
