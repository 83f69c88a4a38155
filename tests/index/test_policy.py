"""Match policy files (`index.policy`): parsing, validation errors, the stored form and its TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from index.errors import CorruptIndexError, PolicyError
from index.policy import Policy, Rule, load_policy, parse_policy, policy_toml, read_policy

GOOD = """
[[rule]]
name = "studio-x cameos"
rights_holder = "Studio X"
flag = 0.6
review = 0.4
min_seconds = 2
action = "block"

[[rule]]
franchise = "Sunset Saga"
character = "akane"
action = "monetise"

[[rule]]
review = 0.5
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_good_policy_parses_in_order_and_first_match_wins(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, GOOD))
    assert policy.rules[0] == Rule(name="studio-x cameos", rights_holder="Studio X", flag=0.6, review=0.4,
                                   min_seconds=2.0, action="block")
    assert policy.match("akane", "Sunset Saga", "Studio X") == ("studio-x cameos", policy.rules[0])
    assert policy.match("akane", "Sunset Saga", "Other") == (2, policy.rules[1])  # unnamed: 1-based position
    assert policy.match("benkei", "Sunset Saga", "Other") == (3, policy.rules[2])  # no match keys: everything
    assert Policy((Rule(character="akane"),)).match("benkei", "", "") is None


def test_stored_form_and_toml_round_trip(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, GOOD))
    doc = policy.to_dict()
    assert doc["rule"][1] == {"character": "akane", "franchise": "Sunset Saga", "action": "monetise"}
    assert read_policy({"policy": doc}) == policy and read_policy({}) is None
    assert load_policy(_write(tmp_path, policy_toml(doc))) == policy
    assert policy_toml(None).startswith("# no policy")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty policy"),
        ("# only a comment\n", "empty policy"),
        ("[[rule]]\nflg = 0.5\n", "rule 1: unknown key 'flg'"),
        ("title = 'x'\n[[rule]]\nflag = 0.5\n", "unknown key 'title'"),
        ("rule = 3\n", "no rules"),
        ("rule = [1]\n", "rule 1 must be a table"),
        ("[[rule]]\nflag = 'high'\n", "rule 1: flag must be a number, not str"),
        ("[[rule]]\nflag = true\n", "flag must be a number, not bool"),
        ("[[rule]]\nflag = 1.5\n", "flag must be between 0 and 1, not 1.5"),
        ("[[rule]]\nreview = -0.1\n", "review must be between 0 and 1"),
        ("[[rule]]\nflag = nan\n", "flag must be between 0 and 1, not nan"),
        ("[[rule]]\nmin_seconds = -1\n", "min_seconds must be >= 0, not -1"),
        ("[[rule]]\nmin_seconds = inf\n", "min_seconds must be >= 0, not inf"),
        ("[[rule]]\nflag = 0.4\nreview = 0.6\n", "review (0.6) must not be above flag (0.4)"),
        ("[[rule]]\nfranchise = 3\n", "rule 1: franchise must be a non-empty string"),
        ("[[rule]]\naction = ''\n", "action must be a non-empty string"),
        ("[[rule]]\nname = 'a'\n[[rule]]\nname = 'a'\n", "two rules named 'a'"),
        ("[[rule]\nflag = 0.5\n", "not valid TOML"),
    ],
)
def test_invalid_policies_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        load_policy(_write(tmp_path, text))
    assert "\n" not in str(exc.value) and str(tmp_path) in str(exc.value)


def test_not_utf8_and_a_damaged_stored_policy(tmp_path: Path) -> None:
    p = tmp_path / "policy.toml"
    p.write_bytes(b"[[rule]]\naction = '\xff'\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(p)
    with pytest.raises(CorruptIndexError, match="index.json policy: rule 1: flag"):
        read_policy({"policy": {"rule": [{"flag": 2}]}})
    with pytest.raises(PolicyError, match="more than the 1000"):
        parse_policy({"rule": [{}] * 1001})
