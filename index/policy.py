"""Match policy: ordered rules, stored in the index, that set per franchise, rights holder or
character the verdict thresholds, a minimum time on screen and an action label.

A POLICY.toml holds one or more `[[rule]]` tables, tried in order; the first rule whose match keys
(`franchise`, `rights_holder`, `character`; exact, all that are given must match; a rule with none
matches every character) match a character decides for it. `detector.match.policy` applies the rule
when a result is made.

    [[rule]]
    name = "studio-x cameos"        # optional; results name a rule by it, else by its 1-based position
    rights_holder = "Studio X"
    flag = 0.6                      # calibrated score, 0..1; review <= flag
    review = 0.4
    min_seconds = 2.0               # a flag shorter on screen than this is a review
    action = "block"                # free label, passed through to results

Why in `index.json` (key `policy`) and not in `meta.sqlite`: like `thresholds`, which it refines,
it is a few hundred bytes of verdict settings, not reference data; the manifest is replaced
atomically together with the generation it names, so a policy commits with its generation, and
it stays readable with `cat` or `jq`. An index with a policy is format 5 (`index.generation`), so
a mamori that would ignore the policy refuses the index instead.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from index.errors import CorruptIndexError, PolicyError

__all__ = ["MATCH_KEYS", "MAX_RULES", "Policy", "Rule", "load_policy", "parse_policy", "policy_toml", "read_policy"]

#: the keys a rule matches on, exactly
MATCH_KEYS = ("character", "franchise", "rights_holder")
_TEXT_KEYS = ("name", *MATCH_KEYS, "action")
_SCORE_KEYS = ("flag", "review")
_KEYS = (*_TEXT_KEYS, *_SCORE_KEYS, "min_seconds")
MAX_RULES = 1000


@dataclass(frozen=True)
class Rule:
    """One `[[rule]]`: None is "not given" (a match key: any value; a threshold: the index's)."""

    name: str | None = None
    character: str | None = None
    franchise: str | None = None
    rights_holder: str | None = None
    action: str | None = None
    flag: float | None = None
    review: float | None = None
    #: seconds on screen below which a flag becomes a review (`detector.match.policy.on_screen`)
    min_seconds: float | None = None

    def matches(self, character: str, franchise: str, rights_holder: str) -> bool:
        got = {"character": character, "franchise": franchise, "rights_holder": rights_holder}
        return all(getattr(self, k) is None or getattr(self, k) == got[k] for k in MATCH_KEYS)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Policy:
    """The ordered rules of an index; the first that matches a character decides for it."""

    rules: tuple[Rule, ...]

    def match(self, character: str, franchise: str, rights_holder: str) -> tuple[str | int, Rule] | None:
        """The first matching rule and its label (its name, else its 1-based position), or None."""
        for i, rule in enumerate(self.rules, 1):
            if rule.matches(character, franchise, rights_holder):
                return (rule.name if rule.name is not None else i), rule
        return None

    def to_dict(self) -> dict[str, Any]:
        """As stored in `index.json` and printed by `index info --json`: the TOML's shape, `{"rule": [...]}`."""
        return {"rule": [r.to_dict() for r in self.rules]}


def policy_toml(doc: dict[str, Any] | None) -> str:
    """A stored policy (`Policy.to_dict`, or None) as POLICY.toml text that `load_policy` reads back."""
    if not doc:
        return "# no policy: the index's thresholds for every character (`mamori index thresholds`)\n"
    blocks = []
    for rule in doc["rule"]:
        # a JSON string or number is a valid TOML basic string or float
        blocks.append("[[rule]]\n" + "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in rule.items()))
    return "\n".join(blocks)


def _number(v: Any, where: str, low: float, high: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PolicyError(f"{where} must be a number, not {type(v).__name__} {v!r}")
    if not (math.isfinite(v) and low <= v <= high):
        bounds = f">= {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise PolicyError(f"{where} must be {bounds}, not {v!r}")
    return float(v)


def _rule(table: Any, where: str) -> Rule:
    if not isinstance(table, dict):
        raise PolicyError(f"{where} must be a table ([[rule]]), not {type(table).__name__}")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    for k in _TEXT_KEYS:
        if k in table and (not isinstance(table[k], str) or not table[k]):
            raise PolicyError(f"{where}: {k} must be a non-empty string, not {table[k]!r}")
    kw: dict[str, Any] = {k: table[k] for k in _TEXT_KEYS if k in table}
    kw |= {k: _number(table[k], f"{where}: {k}", 0.0, 1.0) for k in _SCORE_KEYS if k in table}
    if "min_seconds" in table:
        kw["min_seconds"] = _number(table["min_seconds"], f"{where}: min_seconds", 0.0, math.inf)
    rule = Rule(**kw)
    if rule.flag is not None and rule.review is not None and rule.review > rule.flag:
        raise PolicyError(f"{where}: review ({rule.review:g}) must not be above flag ({rule.flag:g})")
    return rule


def parse_policy(doc: Any, source: str = "policy") -> Policy:
    """A validated `Policy` from a parsed POLICY.toml (or the `policy` object of `index.json`).

    Raises:
        PolicyError: not a table, no rules, an unknown key, a wrong type, a number out of range,
            review above flag, two rules with the same name (the message names `source` and the rule).
    """
    if not isinstance(doc, dict) or not doc:
        raise PolicyError(f"{source}: empty policy (give one or more [[rule]] tables)")
    rules = doc.get("rule")
    unknown = sorted(set(doc) - {"rule"})
    if unknown:
        raise PolicyError(f"{source}: unknown key {unknown[0]!r} (a policy holds only [[rule]] tables)")
    if not isinstance(rules, list) or not rules:
        raise PolicyError(f"{source}: no rules (give one or more [[rule]] tables)")
    if len(rules) > MAX_RULES:
        raise PolicyError(f"{source}: {len(rules)} rules, more than the {MAX_RULES} allowed")
    out = tuple(_rule(t, f"{source}: rule {i}") for i, t in enumerate(rules, 1))
    names = [r.name for r in out if r.name is not None]
    if len(set(names)) != len(names):
        raise PolicyError(f"{source}: two rules named {next(n for n in names if names.count(n) > 1)!r}")
    return Policy(out)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a POLICY.toml (see the module docstring).

    Raises:
        PolicyError: invalid TOML or an invalid policy (`parse_policy`).
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        try:
            doc = tomllib.load(f)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: not valid TOML ({exc})") from exc
    return parse_policy(doc, str(path))


def read_policy(manifest: dict[str, Any]) -> Policy | None:
    """The policy stored in an `index.json` (None: the default, no policy).

    Raises:
        CorruptIndexError: a stored policy that does not validate.
    """
    doc = manifest.get("policy")
    if doc is None:
        return None
    try:
        return parse_policy(doc, "index.json policy")
    except PolicyError as exc:
        raise CorruptIndexError(str(exc)) from exc
