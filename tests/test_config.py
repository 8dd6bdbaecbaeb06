"""bundle.toml: typed, frozen, every problem reported at once with line numbers and suggestions."""

from __future__ import annotations

import pytest

from bundler.errors import ConfigError
from bundler.recipe.config import dump_resolved
from bundler.recipe.configfile import parse_config

MINIMAL = """
[project]
name = "demo"
seed = 7

[model]
id = "org/base"

[data]
path = "data.jsonl"
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [str(p) for p in info.value.problems]


def test_minimal_config_fills_every_seed_from_the_project_seed() -> None:
    config = parse_config(MINIMAL).resolved()
    assert config.seeds() == {"project": 7, "split": 7, "train": 7, "lora_init": 7}


def test_explicit_seed_wins_over_the_project_seed() -> None:
    config = parse_config(MINIMAL + "\n[train]\nseed = 99\n").resolved()
    assert config.train.seed == 99 and config.split.seed == 7


def test_unknown_key_suggests_the_nearest_name_with_its_line() -> None:
    problems = problems_of(MINIMAL.replace("seed = 7", "sed = 7"))
    assert problems == ["project.sed (line 4): unknown key; did you mean 'seed'?"]


def test_every_problem_is_reported_at_once() -> None:
    text = (
        MINIMAL + "\n[train]\nmax_steps = 0\nbatchsize = 4\n[split]\nratios = { train = 0.5, val = 0.1, test = 0.1 }\n"
    )
    problems = problems_of(text)
    assert len(problems) == 3
    assert any("batch_size" in p for p in problems)
    assert any("sum to 1" in p for p in problems)
    assert any("max_steps" in p and "in [1, 10,000,000]; got 0" in p for p in problems)


def test_bad_toml_names_the_line() -> None:
    problems = problems_of("[project\nname = 'x'\n")
    assert problems[0].startswith("TOML (line 1)")


def test_missing_required_sections_are_named() -> None:
    problems = problems_of('[project]\nname = "demo"\n')
    assert {p.split(":")[0] for p in problems} == {"model", "data"}


def test_a_token_in_the_config_is_refused_and_never_echoed() -> None:
    token = "hf_" + "a" * 34
    problems = problems_of(MINIMAL + f'\n[publish]\nrepo = "{token}"\n')
    assert any("Hugging Face token" in p for p in problems)
    assert all(token not in p for p in problems)


def test_credentials_in_a_url_are_refused() -> None:
    problems = problems_of(MINIMAL.replace('path = "data.jsonl"', 'path = "https://user:pw@example.com/d.jsonl"'))
    assert any("credentials in a URL" in p for p in problems)


def test_config_models_are_frozen() -> None:
    config = parse_config(MINIMAL)
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        config.project.seed = 3  # type: ignore[misc]


def test_resolved_dump_is_deterministic_and_complete() -> None:
    first = dump_resolved(parse_config(MINIMAL))
    second = dump_resolved(parse_config(MINIMAL))
    assert first == second
    reparsed = parse_config(first.split("\n", 1)[1])
    assert reparsed.resolved() == parse_config(MINIMAL).resolved()
    assert "init_seed = 7" in first


def test_local_path_as_model_id_is_refused() -> None:
    problems = problems_of(MINIMAL.replace('id = "org/base"', 'id = "/home/me/model"'))
    assert any("Hub ID" in p for p in problems)


def test_tracking_never_enters_the_resolved_recipe_config() -> None:
    tracked = parse_config(MINIMAL + '\n[tracking]\nbackend = "mlflow"\ntracking_uri = "/home/me/mlruns"\n')
    assert tracked.tracking.backend == "mlflow"
    assert dump_resolved(tracked) == dump_resolved(parse_config(MINIMAL))
