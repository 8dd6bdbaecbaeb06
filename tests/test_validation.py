"""Every input a user can get wrong is refused (exit 2) before any split, install or training, all at once."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.errors import BundlerError, ConfigError, InputProblemsError
from bundler.pipeline import check_build
from bundler.recipe.configfile import parse_config
from bundler.recipe.validate import check_inputs
from tests.conftest import QUICKSTART, git, make_git_project, run_cli

BASE = tomllib.loads((QUICKSTART / "bundle.toml").read_text(encoding="utf-8"))


def problems_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


def with_changes(**sections: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(BASE))
    for section, values in sections.items():
        target = config
        for part in section.split("."):
            target = target.setdefault(part, {})
        target.update(values)
    return config


def write_project(root: Path, config: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("requirements.in", "requirements.lock", "image.lock.json"):
        shutil.copyfile(QUICKSTART / name, root / name)
    (root / "bundle.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
    (root / "data").mkdir(exist_ok=True)
    if rows is None:
        shutil.copyfile(QUICKSTART / "data" / "reviews.jsonl", root / "data" / "reviews.jsonl")
    else:
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (root / "data" / "reviews.jsonl").write_text(lines, encoding="utf-8")
    return root


# ---------------------------------------------------------------- numbers, with their range in the message


def test_the_issues_nonsense_numbers_are_refused_together_with_their_ranges() -> None:
    text = tomli_w.dumps(
        with_changes(
            train={"learning_rate": math.inf, "max_seq_len": 1, "max_steps": 12345678901234567890},
            lora={"r": 100000},
            split={"ratios": {"train": math.nan, "val": 0.1, "test": 0.1}},
        )
    )
    message = problems_of(text)
    assert "5 problem(s)" in message
    assert "train.learning_rate" in message and "in (0, 10]; got inf" in message
    assert "train.max_seq_len" in message and "in [2, 1,048,576]; got 1" in message
    assert "train.max_steps" in message and "in [1, 10,000,000]; got 12345678901234567890" in message
    assert "lora.r" in message and "in [1, 65536]; got 100000" in message
    assert "split.ratios.train" in message and "not inf or nan" in message


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("train", {"learning_rate": math.nan}, "train.learning_rate"),
        ("train", {"weight_decay": math.inf}, "train.weight_decay"),
        ("train", {"warmup_steps": 10**8}, "train.warmup_steps"),
        ("train", {"max_seq_len": 300}, "exceeds model.tiny.max_position_embeddings (256)"),
        ("lora", {"dropout": math.nan}, "lora.dropout"),
        ("model.tiny", {"hidden_size": 66}, "must be a multiple of num_attention_heads"),
        ("data", {"prompt_template": "Q: {prompt"}, "not a valid format string"),
        ("data", {"prompt_template": "Q: {prompt} {}"}, "{} and {0} have no value"),
        ("split", {"ratios": {"train": 1.5, "val": -0.25, "test": -0.25}}, "in [0, 1]"),
    ],
)
def test_a_bad_number_or_template_is_named_with_what_is_allowed(section: str, values: dict, expected: str) -> None:
    assert expected in problems_of(tomli_w.dumps(with_changes(**{section: values})))


# ---------------------------------------------------------------- data against config


def test_a_template_field_the_data_lacks_is_named_with_example_ids(tmp_path: Path) -> None:
    config = with_changes(data={"prompt_template": "### {title}\n{prompt}\n### Sentiment:\n"})
    project = write_project(tmp_path / "p", config)
    with pytest.raises(InputProblemsError) as caught:
        check_inputs(parse_config(tomli_w.dumps(config)).resolved(), project)
    message = str(caught.value)
    assert "data.prompt_template {title} names field 'title', which every example lacks" in message
    assert "r0000" in message and "the data has: date, id, label, prompt, response" in message


def test_examples_that_lose_their_response_are_named_and_all_of_them_is_refused(tmp_path: Path) -> None:
    rows = [
        {"id": "short", "prompt": "hi", "response": "yes"},
        {"id": "long", "prompt": "x" * 400, "response": "no"},
        {"id": "ok2", "prompt": "fine", "response": "sure"},
    ]
    config = with_changes(train={"max_seq_len": 64}, data={"label_field": None, "date_field": None})
    del config["data"]["label_field"], config["data"]["date_field"]
    project = write_project(tmp_path / "some", config, rows)
    report = check_inputs(parse_config(tomli_w.dumps(config)).resolved(), project)
    assert any("1 of 3 example(s) lose their whole response" in w and "long" in w for w in report.warnings)

    every = write_project(tmp_path / "all", {**config, "train": {**config["train"], "max_seq_len": 8}}, rows)
    with pytest.raises(InputProblemsError) as caught:
        check_inputs(parse_config((every / "bundle.toml").read_text()).resolved(), every)
    assert "leaves no room for any response" in str(caught.value)


def test_the_byte_count_agrees_with_the_runtime_tokenizer_at_the_edge(tmp_path: Path) -> None:
    # The template renders to exactly N bytes; with BOS the prompt is N+1 tokens, so max_seq_len N+1 loses
    # the response and N+2 keeps one token of it, as runtime/data.py's encode() truncates.
    rows = [{"id": "a", "prompt": "héllo", "response": "yes"}]
    template = "Q: {prompt}\nA: "
    n = len(template.format(prompt="héllo").encode())
    for max_len, survives in ((n + 1, False), (n + 2, True)):
        config = with_changes(train={"max_seq_len": max_len, "warmup_steps": 0}, data={"prompt_template": template})
        del config["data"]["label_field"], config["data"]["date_field"]
        project = write_project(tmp_path / str(max_len), config, rows)
        parsed = parse_config(tomli_w.dumps(config)).resolved()
        if survives:
            check_inputs(parsed, project)
        else:
            with pytest.raises(InputProblemsError):
                check_inputs(parsed, project)


def test_lora_r_above_the_smallest_targeted_layer_and_unknown_targets_are_refused(tmp_path: Path) -> None:
    config = with_changes(lora={"r": 40, "target_modules": ["q_proj", "k_proj", "qkv_proj"]})
    project = write_project(tmp_path / "p", config)
    with pytest.raises(InputProblemsError) as caught:
        check_inputs(parse_config(tomli_w.dumps(config)).resolved(), project)
    message = str(caught.value)
    assert "2 problem(s)" in message
    assert "'qkv_proj', which this model does not have" in message
    assert "lora.r = 40 exceeds the width of the smallest targeted layer (k_proj: 64 -> 32)" in message


def test_a_local_models_widths_come_from_its_config_json(tmp_path: Path) -> None:
    model = tmp_path / "p" / "model"
    model.mkdir(parents=True)
    shape = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 48, "num_attention_heads": 2}
    (model / "config.json").write_text(json.dumps(shape))
    config = with_changes(model={"source": "local", "path": "model"}, lora={"r": 17})
    del config["model"]["tiny"]
    project = write_project(tmp_path / "p", config)
    with pytest.raises(InputProblemsError, match=r"lora.r = 17 exceeds .* must be in \[1, 16\]"):
        check_inputs(parse_config(tomli_w.dumps(config)).resolved(), project)


def test_a_tiny_model_too_big_for_memory_names_the_knob(tmp_path: Path) -> None:
    config = with_changes(**{"model.tiny": {"hidden_size": 65536, "num_attention_heads": 4}})
    config["train"]["max_seq_len"] = 128
    project = write_project(tmp_path / "p", config)
    with pytest.raises(InputProblemsError, match=r"GiB .* lower model.tiny.hidden_size"):
        check_inputs(parse_config(tomli_w.dumps(config)).resolved(), project)


def test_the_cli_refuses_bad_input_with_exit_2_and_leaves_nothing_at_out(tmp_path: Path) -> None:
    config = with_changes(train={"max_seq_len": 8}, data={"prompt_template": "{title}: {prompt}"})
    project = make_git_project(write_project(tmp_path / "src", config), tmp_path / "p")
    out = tmp_path / "outputs" / "b"
    result = run_cli("build", str(project), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "problem(s) with the build inputs" in result.stderr and "'title'" in result.stderr
    assert "hint:" in result.stderr and "internal error" not in result.stderr
    assert "splitting" not in result.stderr and "recording the code commit" not in result.stderr
    assert not out.exists() and list(out.parent.iterdir()) == []


# ---------------------------------------------------------------- property tests: validate-only path

_wild_numbers = st.floats(allow_nan=True, allow_infinity=True)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
# Each example breaks a random subset of these (often none): every field is either sane or wild.
_FIELDS = ("learning_rate", "max_seq_len", "max_steps", "batch_size", "ratios", "r", "template", "responses")


@st.composite
def projects(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    broken = draw(st.sets(st.sampled_from(_FIELDS), max_size=3))

    def pick(name: str, sane: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
        return draw(wild if name in broken else sane)

    train = {
        "learning_rate": pick("learning_rate", st.floats(1e-5, 0.1), _wild_numbers),
        "max_seq_len": pick("max_seq_len", st.integers(96, 256), st.integers(-3, 300)),
        "max_steps": pick("max_steps", st.integers(1, 50), st.integers(-5, 10**21)),
        "warmup_steps": draw(st.integers(min_value=0, max_value=5)),
        "batch_size": pick("batch_size", st.integers(1, 16), st.integers(-2, 10**6)),
    }
    sane_ratios = st.just({"train": 0.8, "val": 0.1, "test": 0.1})
    ratios = pick("ratios", sane_ratios, st.fixed_dictionaries({k: _wild_numbers for k in ("train", "val", "test")}))
    lora = {"r": pick("r", st.integers(1, 32), st.integers(-1, 10**6)), "dropout": draw(st.floats(0, 0.99))}
    template = pick(
        "template",
        st.sampled_from(["Q: {prompt}\nA: ", "### {prompt} ###"]),
        st.sampled_from(["{title} {prompt}", "{prompt", "x" * 300 + "{prompt}", "{prompt} {0}"]),
    )
    config = with_changes(train=train, split={"ratios": ratios}, lora=lora, data={"prompt_template": template})
    del config["data"]["label_field"], config["data"]["date_field"]
    size = draw(st.integers(min_value=1, max_value=12))
    rows = []
    for index in range(size):
        row: dict[str, Any] = {"id": f"e{index}", "prompt": draw(_text)}
        if "responses" not in broken or draw(st.booleans()):
            row["response"] = draw(_text)
        rows.append(row)
    return config, rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=projects())
def test_any_config_and_dataset_either_validates_or_exits_2_with_a_message_and_no_output(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    config, rows = case
    root = tmp_path_factory.mktemp("prop")
    project = write_project(root / "p", config, rows)
    out = root / "out" / "bundle"
    try:
        checked, _ = check_build(project, out)
    except BundlerError as exc:
        assert exc.exit_code == 2
        assert str(exc).strip() and exc.hint
    else:  # what validated is trainable: finite numbers, and some response survives truncation
        assert math.isfinite(checked.train.learning_rate) and 0 < checked.train.learning_rate <= 10
        assert all(math.isfinite(r) for r in checked.split.ratios.values())
        assert all("response" in row for row in rows)
        prompts = [1 + len(checked.data.prompt_template.format(prompt=r["prompt"]).encode()) for r in rows]
        assert min(prompts) < checked.train.max_seq_len
        assert checked.lora.r <= 32  # k_proj of the tiny model is 64 -> 32
    assert not out.exists() and not out.parent.exists()


@pytest.mark.slow
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lr=st.floats(min_value=1e-4, max_value=1e-2), r=st.integers(min_value=1, max_value=32))
def test_a_generated_valid_config_really_trains(tmp_path_factory: pytest.TempPathFactory, lr: float, r: int) -> None:
    root = tmp_path_factory.mktemp("trains")
    train = {"learning_rate": lr, "max_steps": 4, "eval_every": 2, "warmup_steps": 1}
    config = with_changes(train=train, lora={"r": r})
    project = make_git_project(write_project(root / "src", config), root / "p")
    out = root / "b"
    result = run_cli("build", str(project), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    metrics = (out / "data" / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in metrics if "loss" in json.loads(line)]
    assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses)
    git(project, "status")  # the project is untouched and still a repository
