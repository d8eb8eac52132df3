"""The configuration reference of the README, generated from the config model itself.

``python -m schemas.reference`` prints it; a test keeps the README's copy identical.
"""

from __future__ import annotations

from pydantic import BaseModel

from schemas.config import HeadwaterConfig


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.default_factory is not None:
        paths = {"data_dir": "$XDG_DATA_HOME/headwater/weaviate", "report_dir": "$XDG_DATA_HOME/headwater/reports",
                 "cache_dir": "$XDG_CACHE_HOME/headwater/embed"}
        return paths.get(name, "(section)")
    value = field.default
    if isinstance(value, tuple):
        if not value:
            return "none"
        return ", ".join(str(v) for v in value) if len(value) < 5 else f"{len(value)} values"
    return "unset" if value is None else f"{value}"


def config_reference() -> str:
    lines = ["| setting (env var) | default | meaning |", "|---|---|---|"]
    for section, field in HeadwaterConfig.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, sub in model.model_fields.items():
                env = f"HEADWATER_{section.upper()}__{name.upper()}"
                lines.append(f"| `{section}.{name}` (`{env}`) | `{_default(model, name)}` | {sub.description} |")
        else:
            lines.append(f"| `{section}` (`HEADWATER_{section.upper()}`) | `{_default(HeadwaterConfig, section)}` "
                         f"| {field.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(config_reference())
