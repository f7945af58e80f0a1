"""One function loads every config: schema ← group files ← YAML ← command-line ``key=value``.

    cfg = load_experiment("configs/stage1.yaml", ["model=tiny", "optim.lr=3e-4"])   # training
    cfg = load_config(PrepareConfig, "configs/prepare.yaml", ["dataset=mead", ...])   # any schema
    cfg = experiment_from_dict(checkpoint_config, source="runs/x/last.ckpt")         # re-typed

- A YAML may start with a ``defaults:`` mapping selecting one file per group directory next to it,
  e.g. ``defaults: {model: B, data: synthetic, trainer: gpu, logger: wandb}`` loads
  ``configs/model/B.yaml`` into the ``model`` section, etc. An override without a dot whose key is a
  group (``model=tiny``) selects another file of that group.
- The ``setup`` group is an overlay over the whole experiment rather than one section: a file in
  ``configs/setup/`` may hold its own ``defaults:`` (group files it selects) and top-level keys that
  override the experiment YAML. ``setup=synthetic_cpu`` turns the real-data experiments into the
  CPU / synthetic-world runs of the demo, the tests and the README examples. Precedence, lowest
  first: schema, group files (experiment defaults < setup defaults < command-line group choices),
  experiment YAML, setup keys, command-line ``key=value``.
- Unknown keys, wrong types, missing mandatory values, out-of-range values (field metadata
  ``range``/``choices``) and cross-field inconsistencies (a ``check()`` method on the schema returning
  ``(key, message)`` pairs) raise `ConfigError` with one line naming the key and the fix, before
  anything heavy starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from configs.schema import ExperimentConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the key and the fix."""


class ConfigPathError(ConfigError, FileNotFoundError):
    """A configured path (shards, statistics, weights) that does not exist: names the key."""


def load_config(schema: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build a validated `schema` instance from an optional YAML file and ``key=value`` overrides."""
    overrides = list(overrides or [])
    base = OmegaConf.structured(schema)
    layers: list[DictConfig] = []
    if yaml_path is not None:
        layers = _yaml_layers(Path(yaml_path), overrides)
    dotlist = [o for o in overrides if not _is_group_override(o, _group_dirs(yaml_path))]
    for o in dotlist:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value (e.g. optim.lr=3e-4)")
    try:
        merged = base
        for layer in [*layers, OmegaConf.from_dotlist(dotlist)]:
            merged = OmegaConf.merge(merged, layer)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(
                f"{missing[0]}: missing mandatory value; set it in the YAML or add {missing[0]}=... on the command line"
                + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
            )
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e, base)) from None
    except ConfigError:
        raise
    except ValueError as e:  # a section's own __post_init__ check (e.g. model preset, diffusion schedule)
        raise ConfigError(_post_init_error(merged, e)) from None
    _check_fields(obj, "")
    check = getattr(obj, "check", None)
    if callable(check):
        for key, message in check():
            raise ConfigError(f"{key}: {message}")
    return obj  # type: ignore[return-value]


def load_experiment(yaml_path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The training config, validated and resolved: the DiT's audio input (L, C) follows the encoder."""
    return resolve(load_config(ExperimentConfig, yaml_path, overrides))


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """Derived values: model.audio_layers / audio_dim from the configured audio encoder (wav2vec2 reads
    its config.json only), and audio.context_frames = model.tp + model.t_window (the audio context every
    path encodes at once) with audio.context_overlap = 2·model.tp (at most half the context). A wav2vec2
    directory that is not there is one line naming the key."""
    from models.audio import audio_feature_shape

    if cfg.audio.name == "wav2vec2" and not cfg.audio.wav2vec2_path:
        raise ConfigError("audio.wav2vec2_path is not set: the wav2vec2 encoder needs a local transformers directory "
                          "(config.json + model.safetensors); configs/stage1.yaml and stage2.yaml read it from "
                          "$WAV2VEC2_DIR. Export WAV2VEC2_DIR=DIR, or set audio.wav2vec2_path=DIR, or train on "
                          "log-mel with audio.name=mel (setup=synthetic_cpu does)")
    _set_audio_context(cfg)
    try:
        cfg.model.audio_layers, cfg.model.audio_dim = audio_feature_shape(cfg.audio)
    except FileNotFoundError as e:
        raise ConfigPathError(str(e)) from None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


def _set_audio_context(cfg: ExperimentConfig) -> None:
    """The encoder sees one training window at a time (Tp + T frames); a longer clip's windows overlap
    by 2·Tp frames, so each frame has at least Tp frames of audio either side, as much as the DiT's
    own context (at most half the window)."""
    context = cfg.model.tp + cfg.model.t_window
    cfg.audio.context_frames = context
    cfg.audio.context_overlap = min(2 * cfg.model.tp, context // 2)


def experiment_from_dict(d: dict[str, Any], source: str) -> ExperimentConfig:
    """A stored config (checkpoint hyper-parameters, an export's config.yaml) as a typed ExperimentConfig.

    Validated like a loaded one but not re-resolved: the stored model section already holds the
    audio shape the weights were trained with. A stored diffusion section without `prediction` is from
    before that key existed, when every network predicted ε: it reads as "eps", not today's default.
    A stored audio section without `context_frames` is from before the encoder context was recorded:
    it gets the context derived from its model section, as training would have it now.
    """
    diffusion = d.get("diffusion")
    if isinstance(diffusion, dict) and "prediction" not in diffusion:
        d = {**d, "diffusion": {**diffusion, "prediction": "eps"}}
    base = OmegaConf.structured(ExperimentConfig)
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(base, OmegaConf.create(d)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: stored config does not match this version's schema: "
                          f"{_one_line(e, base)}") from None
    except ValueError as e:
        raise ConfigError(f"{source}: stored config is invalid: {e}") from None
    if "context_frames" not in (d.get("audio") or {}):
        _set_audio_context(obj)  # type: ignore[arg-type]
    return obj  # type: ignore[return-value]


def _post_init_error(merged: DictConfig, e: ValueError) -> str:
    """Name the section, and the field when the message starts with one, whose own check raised."""
    for key in merged:
        node = merged[key]
        if not isinstance(node, DictConfig):
            continue
        try:
            OmegaConf.to_object(node)
        except ValueError as inner:
            field = str(inner).split(" ", 1)[0]
            return f"{key}.{field}: {inner}" if field in node else f"{key}: {inner}"
    return f"config: {e}"


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (saved in every run directory and sent to W&B)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_container(cfg: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------


def _group_dirs(yaml_path: str | Path | None) -> dict[str, Path]:
    if yaml_path is None:
        return {}
    root = Path(yaml_path).parent
    return {p.name: p for p in root.iterdir() if p.is_dir() and any(p.glob("*.yaml"))}


def _is_group_override(o: str, groups: dict[str, Path]) -> bool:
    key = o.split("=", 1)[0]
    return "=" in o and "." not in key and key in groups


SETUP_GROUP = "setup"  # the overlay group (see the module docstring)


def _yaml_layers(path: Path, overrides: list[str]) -> list[DictConfig]:
    body = _load_yaml(path)
    groups = _group_dirs(path)
    selected: dict[str, str] = {}
    if "defaults" in body:
        selected.update(_defaults(body, path))
    cli = dict(o.split("=", 1) for o in overrides if _is_group_override(o, groups))
    setup_name = cli.pop(SETUP_GROUP, selected.pop(SETUP_GROUP, None))
    setup: DictConfig | None = None
    if setup_name is not None:
        setup = _load_yaml(_group_file(groups, SETUP_GROUP, setup_name, path))
        if "defaults" in setup:
            selected.update(_defaults(setup, groups[SETUP_GROUP] / f"{setup_name}.yaml"))
    selected.update(cli)
    layers = []
    for group, name in selected.items():
        if group == SETUP_GROUP:
            raise ConfigError(f"{path}: a setup file cannot select another setup ({name})")
        layers.append(OmegaConf.create({group: OmegaConf.load(_group_file(groups, group, name, path))}))
    return [*layers, body, *([setup] if setup is not None else [])]


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (experiment files live in configs/, e.g. configs/stage1.yaml)")
    try:
        body = OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors of any kind
        raise ConfigError(f"{path}: cannot parse YAML ({type(e).__name__}: {e})") from None
    if not isinstance(body, DictConfig):
        raise ConfigError(f"{path}: the file must be a mapping of keys, not a list")
    return body


def _defaults(body: DictConfig, path: Path) -> dict[str, str]:
    defaults = OmegaConf.to_container(body.pop("defaults"))
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: 'defaults' must be a mapping group: name (e.g. model: B)")
    return {str(k): str(v) for k, v in defaults.items()}


def _group_file(groups: dict[str, Path], group: str, name: str, path: Path) -> Path:
    if group not in groups:
        raise ConfigError(f"{path}: defaults name unknown group '{group}'; groups are {sorted(groups)}")
    f = groups[group] / f"{name}.yaml"
    if not f.is_file():
        options = sorted(p.stem for p in groups[group].glob("*.yaml"))
        hint = difflib.get_close_matches(name, options, n=1)
        raise ConfigError(
            f"{group}={name}: no file {f}; choose one of {options}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    return f


def _one_line(e: OmegaConfBaseException, base: DictConfig) -> str:
    key = getattr(e, "full_key", None) or "?"
    msg = str(e).splitlines()[0]
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)):
        parent_key, _, leaf = key.rpartition(".")
        try:
            parent = OmegaConf.select(base, parent_key) if parent_key else base
            options = list(parent.keys()) if isinstance(parent, DictConfig) else []
        except Exception:
            options = []
        hint = difflib.get_close_matches(leaf, [str(o) for o in options], n=1)
        fix = (f"did you mean '{(parent_key + '.') if parent_key else ''}{hint[0]}'?" if hint
               else f"valid keys here: {options}")
        return f"{key}: unknown key; {fix}"
    if isinstance(e, MissingMandatoryValue):
        return f"{key}: missing mandatory value; set it in the YAML or add {key}=... on the command line"
    if isinstance(e, ValidationError):
        return f"{key}: {msg}; fix the value's type in the YAML or the override"
    return f"{key}: {msg}"


def _check_fields(obj: Any, prefix: str) -> None:
    """Apply `range` and `choices` field metadata recursively."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            raise ConfigError(
                f"{key}: {value!r} is not one of {list(choices)}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        lo, hi = f.metadata.get("range", (None, None))
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{key}: {value} is not a finite number; set a finite value")
        if value is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ConfigError(f"{key}: {value} is out of range [{lo}, {hi}]; set a value inside it")
        if dataclasses.is_dataclass(value):
            _check_fields(value, key + ".")
