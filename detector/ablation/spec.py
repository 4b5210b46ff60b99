"""The ablation spec: base config, common overrides, named variants and seeds, from YAML or ``--vary``.

See :mod:`detector.ablation` for the YAML form. Only the spec's own shape is checked here;
:func:`detector.ablation.plan.plan_runs` loads and validates every run's training config.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from detector.config import CONFIG_DIR, read_yaml_file, resolve_config_path
from detector.errors import ConfigError

SPEC_KEYS = ("base", "set", "seeds", "variants", "baseline", "out")
"""The keys an ablation YAML file may hold."""
_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


@dataclass(frozen=True)
class Variant:
    """One arm of the ablation.

    Attributes:
        name: folder name and table label (letters, digits, ``._+=-``; e.g. ``giou``).
        overrides: ``key=value`` items applied after the common ones (may be empty: the base as is).
        origin: where it was defined, for errors (``box_losses.yaml:12`` or ``--vary loss.box=...``).
    """

    name: str
    overrides: tuple[str, ...]
    origin: str


@dataclass(frozen=True)
class AblationSpec:
    """What to train.

    Attributes:
        base: the base training config: an absolute path (resolved when the spec was read).
        common: overrides applied to every run, before the variant's.
        variants: the arms, in table order.
        seeds: ``train.seed`` values; every variant runs once per seed.
        out: the output folder (relative to the current directory), or None (the caller chooses).
        source: the spec file, or ``"command line"``.
        baseline: the variant every other is compared with (delta columns, paired statistics); None: the first.
    """

    base: str
    common: tuple[str, ...]
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    out: str | None
    source: str
    baseline: str | None = None

    @property
    def reference(self) -> str:
        """The baseline variant's name: ``baseline``, else the first variant's."""
        return self.baseline if self.baseline is not None else self.variants[0].name


def override_key(item: str) -> str:
    """``"loss.box={name: focal_eiou}"`` -> ``"loss.box"`` (the text before the first ``=``, stripped)."""
    return item.partition("=")[0].strip()


def _check_overrides(items: Any, what: str, file: str, line: int | None) -> tuple[str, ...]:
    """A list of ``key=value`` strings (a single string is a one-item list; null is empty).

    ``train.seed`` is refused: seeds come from ``seeds:`` / ``--seeds``.
    """
    if items is None:
        return ()
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list):
        raise ConfigError(what, f"expected a list of key=value overrides (e.g. [loss.box=giou]), got "
                                f"{type(items).__name__} {items!r}", file, line)
    out = []
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            hint = (" (write `- loss.box=giou`, not `- loss.box: giou`; quote values holding ': ', e.g. "
                    "\"loss.box={name: focal_eiou, gamma: 0.5}\")") if isinstance(item, dict) else ""
            raise ConfigError(what, f"expected key=value, got {type(item).__name__} {item!r}{hint}", file, line)
        if override_key(item) == "train.seed":
            raise ConfigError(what, f"{item!r}: seeds are set by `seeds:` (--seeds on the command line), "
                                    f"not by overrides", file, line)
        out.append(item)
    return tuple(out)


def _check_seeds(seeds: Any, file: str, line: int | None) -> tuple[int, ...]:
    """Distinct non-negative ints (a single int is a one-item list)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ConfigError("seeds", f"expected a non-empty list of integers >= 0 (e.g. [0, 1]), got {seeds!r}",
                          file, line)
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", f"{seeds} repeats a seed", file, line)
    return tuple(seeds)


def check_variant_name(name: Any, file: str | None = None, line: int | None = None) -> str:
    """Return ``name`` if it can be a folder name and table label, else raise ConfigError."""
    if not isinstance(name, str) or not _VARIANT_NAME.fullmatch(name):
        raise ConfigError("variants", f"variant name {name!r} must start with a letter or digit and hold only "
                                      f"letters, digits and . _ + = - (it names the run folder)", file, line)
    return name


def _check_unique(variants: Sequence[Variant], file: str | None) -> None:
    seen: dict[str, Variant] = {}
    for v in variants:
        if v.name in seen:
            raise ConfigError("variants", f"two variants are named {v.name!r} ({seen[v.name].origin} and "
                                          f"{v.origin}); give them different names", file)
        seen[v.name] = v


def _check_baseline(name: Any, variants: Sequence[Variant], file: str, line: int | None) -> str | None:
    """``name`` if it names one of ``variants`` (None stays None: the first variant is the baseline)."""
    if name is None:
        return None
    names = [v.name for v in variants]
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"variants: {', '.join(names)}"
        raise ConfigError("baseline", f"{name!r} is not a variant of this ablation; {hint}", file, line)
    return name


def load_spec(path: str | Path) -> AblationSpec:
    """Read an ablation YAML file (see the module docstring) into an :class:`AblationSpec`.

    ``base`` is resolved relative to the file's folder, then as a bare name in ``configs/``; ``seeds``
    defaults to ``[0]``; ``out`` stays as written (relative to the current directory) or None.
    Only the spec's own shape is checked here; :func:`plan_runs` validates the training configs.

    Raises:
        ConfigError: naming the file, line and key (unknown key, missing base/variants, bad overrides,
            bad seeds, bad or repeated variant names, base file not found).
    """
    path = Path(path)
    file = str(path)
    data, sources = read_yaml_file(path, "ablation spec")

    def line(*key: str | int) -> int | None:
        return sources.get(tuple(key), (None, None))[1]

    if not isinstance(data, dict):
        raise ConfigError("", f"an ablation spec must be a mapping with keys {', '.join(SPEC_KEYS)}", file, 1)
    for key in data:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(key, SPEC_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(SPEC_KEYS)}"
            raise ConfigError(key, f"unknown key of an ablation spec; {hint}", file, line(key))
    for key in ("base", "variants"):
        if key not in data:
            raise ConfigError(key, "missing; an ablation spec needs `base:` (a training config) and `variants:` "
                                   "(name: [key=value, ...])", file)
    base = data["base"]
    if not isinstance(base, str) or not base.strip():
        raise ConfigError("base", f"expected a config file name, got {base!r}", file, line("base"))
    base_path = resolve_config_path(base, [path.parent, CONFIG_DIR], (file, line("base")), "base", CONFIG_DIR)
    common = _check_overrides(data.get("set"), "set", file, line("set"))
    seeds = _check_seeds(data.get("seeds", [0]), file, line("seeds"))
    raw_variants = data["variants"]
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise ConfigError("variants", "expected a non-empty mapping name: [key=value, ...], e.g. "
                                      "{ciou: [loss.box=ciou], giou: [loss.box=giou]}", file, line("variants"))
    variants = []
    for name, items in raw_variants.items():
        at = line("variants", name)
        check_variant_name(name, file, at)
        overrides = _check_overrides(items, f"variants.{name}", file, at)
        variants.append(Variant(name, overrides, f"{file}:{at}" if at else file))
    out = data.get("out")
    if out is not None and (not isinstance(out, str) or not out.strip()):
        raise ConfigError("out", f"expected a folder path, got {out!r}", file, line("out"))
    baseline = _check_baseline(data.get("baseline"), variants, file, line("baseline"))
    return AblationSpec(str(base_path), common, tuple(variants), seeds, out, file, baseline)


def split_values(text: str) -> list[str]:
    """Split ``--vary`` values on the commas outside brackets and quotes.

    ``"ciou,giou,{name: focal_eiou, gamma: 0.5}"`` -> ``["ciou", "giou", "{name: focal_eiou, gamma: 0.5}"]``.
    Raises ValueError on an empty item or unbalanced brackets.
    """
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced {ch!r} in {text!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if depth or quote:
        raise ValueError(f"unclosed bracket or quote in {text!r}")
    items.append(text[start:].strip())
    if not all(items):
        raise ValueError(f"empty value in {text!r}; separate values with single commas")
    return items


def value_name(value: str) -> str:
    """A folder-safe variant name for an override value.

    ``"giou"`` -> ``"giou"``; ``"{name: focal_eiou, gamma: 0.5}"`` -> ``"focal_eiou_gamma0.5"`` (a loss
    mapping: its name, then each parameter and value); ``"[8, 16, 32]"`` -> ``"8_16_32"``.
    """
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, dict) and "name" in parsed:
        text = "_".join([str(parsed["name"])] + [f"{k}{v}" for k, v in parsed.items() if k != "name"])
    else:
        text = value
    name = re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_.")
    return name or "value"


def spec_from_vary(base: str, vary: Sequence[str], common: Sequence[str] = (), seeds: Sequence[int] = (0,),
                   out: str | None = None, baseline: str | None = None) -> AblationSpec:
    """The spec of ``tools/ablate.py --cfg BASE --vary KEY=V1,V2,...`` (one variant per value).

    Several ``vary`` items give the full grid, named by joining the value names with ``+``
    (``--vary loss.box=ciou,giou --vary loss.cls=bce,focal`` -> ``ciou+bce``, ``ciou+focal``, ...).
    ``base`` is resolved as :func:`~detector.config.load_config` does (current directory, then configs/).

    Raises:
        ConfigError: naming the ``--vary`` item (no ``=``, bad value list, train.seed), bad seeds,
            repeated variant names, or a base config not found.
    """
    if not vary:
        raise ConfigError("", "give at least one --vary KEY=V1,V2,...", "command line")
    base_path = resolve_config_path(base, [Path.cwd(), CONFIG_DIR], ("--cfg", None), "", CONFIG_DIR)
    axes = []
    for item in vary:
        key, sep, values = item.partition("=")
        key = key.strip()
        origin = f"--vary {item}"
        if not sep or not key:
            raise ConfigError("", "expected KEY=V1,V2,..., e.g. loss.box=ciou,giou,diou", origin)
        if key == "train.seed":
            raise ConfigError("", "vary seeds with --seeds, not --vary train.seed", origin)
        try:
            split = split_values(values)
        except ValueError as exc:
            raise ConfigError(key, str(exc), origin) from None
        axes.append([(value_name(v), f"{key}={v}", origin) for v in split])
    variants = []
    for combo in itertools.product(*axes):
        name = "+".join(n for n, _, _ in combo)
        variants.append(Variant(check_variant_name(name, "--vary"), tuple(o for _, o, _ in combo),
                                " ".join(dict.fromkeys(org for _, _, org in combo))))
    _check_unique(variants, "command line")
    return AblationSpec(str(base_path), _check_overrides(list(common), "--set", "command line", None),
                        tuple(variants), _check_seeds(list(seeds), "--seeds", None), out, "command line",
                        _check_baseline(baseline, variants, "command line", None))


def with_cli_overrides(spec: AblationSpec, common: Sequence[str] = (), seeds: Sequence[int] | None = None,
                       out: str | None = None, baseline: str | None = None) -> AblationSpec:
    """``spec`` with ``--set`` items appended to its common overrides, and ``--seeds`` / ``--out`` /
    ``--baseline`` replacing."""
    return dataclasses.replace(
        spec,
        common=spec.common + _check_overrides(list(common), "--set", "command line", None),
        seeds=_check_seeds(list(seeds), "--seeds", None) if seeds else spec.seeds,
        out=out if out is not None else spec.out,
        baseline=(_check_baseline(baseline, spec.variants, "command line", None) if baseline is not None
                  else spec.baseline),
    )


def default_out_dir(spec: AblationSpec) -> Path:
    """``runs/ablate/<spec file stem>``, or ``runs/ablate/<base stem>_<varied keys>`` for a command-line spec."""
    if spec.source != "command line":
        return Path("runs/ablate") / Path(spec.source).stem
    keys = dict.fromkeys(override_key(o) for v in spec.variants for o in v.overrides)
    return Path("runs/ablate") / "_".join([Path(spec.base).stem, *keys])
