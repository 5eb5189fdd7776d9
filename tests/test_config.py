"""Config: precedence, validation, typo hints, round trips."""

from __future__ import annotations

import pytest

from core.config import BudgetJob, ConfigError, EvalJob, RLJob, SFTJob
from core.overrides import (
    apply_overrides,
    build,
    describe,
    from_dict,
    load_preset,
    non_defaults,
    resolve_key,
    to_dict,
)


def test_precedence_defaults_preset_cli() -> None:
    cfg = build(SFTJob, {"sft.lr": 1e-3, "sft.max_steps": 200}, {"sft.lr": "2e-3"})
    assert cfg.sft.lr == 2e-3  # command line beats preset
    assert cfg.sft.max_steps == 200  # preset beats default
    assert cfg.sft.batch_size == SFTJob().sft.batch_size


def test_unknown_key_names_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'sft\.lrr'.*'sft\.lr'"):
        build(SFTJob, cli={"sft.lrr": "1"})
    with pytest.raises(ConfigError, match="did you mean 'sft.max_steps'"):
        resolve_key(SFTJob, "max_step")


def test_bare_key_and_ambiguity() -> None:
    assert resolve_key(SFTJob, "lr") == "sft.lr"
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_key(SFTJob, "seed")


def test_type_errors_and_validation() -> None:
    with pytest.raises(ConfigError, match="wants float"):
        build(SFTJob, cli={"sft.lr": "fast"})
    with pytest.raises(ConfigError, match="micro_batch_size"):
        build(SFTJob, cli={"sft.micro_batch_size": "7"})
    with pytest.raises(ConfigError, match="synth.style"):
        build(SFTJob, cli={"synth.style": "fancy"})
    with pytest.raises(ConfigError, match="wants bool"):
        build(SFTJob, cli={"sft.lora.enabled": "maybe"})


def test_coercion() -> None:
    cfg = apply_overrides(EvalJob(), {"eval.sampling.stop": "a,b"})
    assert cfg.eval.sampling.stop == ("a", "b")
    cfg = build(SFTJob, cli={"sft.lora.enabled": "true", "sft.max_steps": "1e3"})
    assert cfg.sft.lora.enabled is True and cfg.sft.max_steps == 1000


@pytest.mark.parametrize("written", ["16,32,64", "[16,32,64]", "[16, 32, 64]", " [16, 32, 64] "])
def test_a_list_is_accepted_as_config_prints_it(written) -> None:
    """Regression: `budget.budgets=[16,32,64]` (what `python -m lab config` prints) failed with
    "wants tuple, got ['[16', '32', '64]']"; only `16,32,64` worked."""
    assert build(BudgetJob, cli={"budget.budgets": written}).budget.budgets == (16, 32, 64)


def test_a_list_of_strings_in_json_form_keeps_its_escapes() -> None:
    cfg = build(BudgetJob, cli={"budget.answer_stop": '["\\n", "Answer:"]'})
    assert cfg.budget.answer_stop == ("\n", "Answer:")
    assert build(BudgetJob, cli={"budget.answer_stop": "[a, b]"}).budget.answer_stop == ("a", "b")


def test_renamed_keys_say_the_new_name_and_old_saved_configs_still_load() -> None:
    with pytest.raises(ConfigError, match="'rl.lora' was renamed: use 'rl.lora.enabled'"):
        build(RLJob, cli={"rl.lora": "true"})
    with pytest.raises(ConfigError, match="use 'rl.sampling.temperature'"):
        build(RLJob, cli={"rl.temperature": "0.9"})
    old = to_dict(RLJob())
    old["rl"] = {k: v for k, v in old["rl"].items() if k not in ("sampling", "lora")}
    old["rl"].update(temperature=0.9, max_new_tokens=64, lora=True, lora_r=8, eval_problems=50)
    cfg = from_dict(RLJob, old)  # a config.json written before the sections existed
    assert (cfg.rl.sampling.temperature, cfg.rl.sampling.max_new_tokens) == (0.9, 64)
    assert (cfg.rl.lora.enabled, cfg.rl.lora.r, cfg.eval.num_problems) == (True, 8, 50)


def test_rl_samples_and_evaluates_with_one_engine() -> None:
    with pytest.raises(ConfigError, match="must match"):
        build(RLJob, cli={"rl.sampling.backend": "vllm"})
    assert build(RLJob, cli={"rl.sampling.backend": "vllm", "eval.sampling.backend": "vllm"})


def test_round_trip_and_non_defaults() -> None:
    cfg = build(SFTJob, cli={"task.num_count": "9"})
    assert from_dict(SFTJob, to_dict(cfg)) == cfg
    assert non_defaults(cfg) == {"task.num_count": 9}


def test_preset_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="preset not found"):
        load_preset(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_preset(bad)
    good = tmp_path / "good.yaml"
    good.write_text("sft:\n  lr: 0.01\n")
    assert load_preset(good) == {"sft.lr": 0.01}


def test_every_field_has_help() -> None:
    for key, _, text in describe(SFTJob):
        assert text, f"{key} has no help text"


def test_auto_dtype_keeps_fp32_weights_for_training(monkeypatch) -> None:
    """On a bf16 GPU, 'auto' loads bf16 weights for sampling jobs but fp32 ones for SFT / RL
    (whose AdamW steps and EMA anchor moves would round away in bf16)."""
    import torch

    import core.models
    from core.config import ModelConfig
    from core.models import setup_torch

    monkeypatch.setattr(core.models, "pick_device", lambda want: "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert setup_torch(ModelConfig()) == ("cuda", torch.bfloat16)
    assert setup_torch(ModelConfig(), train=True) == ("cuda", torch.float32)
    assert setup_torch(ModelConfig(dtype="bf16"), train=True) == ("cuda", torch.bfloat16)
    assert setup_torch(ModelConfig(dtype="fp32")) == ("cuda", torch.float32)


def test_config_table_explains_sections_with_a_meaning_of_their_own() -> None:
    rows = {key: (default, text) for key, default, text in describe(RLJob)}
    assert rows["rl.sampling"][0] is None and "1.2" in rows["rl.sampling"][1]
    assert rows["rl.sampling.temperature"][0] == 1.2 and rows["eval.sampling.temperature"][0] == 1.0
    keys = [key for key, _, _ in describe(RLJob)]
    assert keys.index("rl.sampling") == keys.index("rl.sampling.backend") - 1  # the header, then its keys


def test_a_preset_for_several_commands_serves_each_of_them() -> None:
    """Regression: `lab sft --preset demo_smoke` failed with "unknown config key 'rl.steps'"."""
    from core.config import JOBS
    from core.overrides import preset_for
    from tests.conftest import ROOT

    preset = load_preset(ROOT / "lab" / "presets" / "demo_smoke.yaml")
    sft = preset_for(SFTJob, preset, JOBS.values(), "command")
    assert "sft.max_steps" in sft and not any(k.startswith(("rl.", "budget.")) for k in sft)
    assert build(SFTJob, sft).sft.max_steps == 20
    with pytest.raises(ConfigError, match="'rll.steps' belongs to no command; did you mean 'rl'"):
        preset_for(SFTJob, {"rll.steps": 3}, JOBS.values(), "command")
