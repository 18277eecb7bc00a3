"""fluxd settings: defaults < config file (TOML) < ``FLUXD_*`` environment < flags.

Only what exists so far is here; each later area adds its own section. The file is
``config.example.toml``'s format; ``FLUXD_DEVCLUSTER__PORT=7443`` style variables
override single values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class ToolSettings(BaseModel):
    """Paths of the external tools; unset means "next to this Python, else on PATH"."""

    model_config = ConfigDict(extra="forbid")

    helm: str | None = None
    kubectl: str | None = None


class DevClusterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=6443, ge=0, le=65535)
    kubeconfig: Path = Path(".fluxd/kubeconfig")
    #: seconds before simulated workloads report ready
    ready_delay: float = Field(default=1.0, ge=0)
    #: watch changes kept; a watch from an older resourceVersion gets 410 Gone
    watch_history: int = Field(default=10_000, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLUXD_", env_nested_delimiter="__",
                                      extra="forbid")

    tools: ToolSettings = ToolSettings()
    devcluster: DevClusterSettings = DevClusterSettings()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init) win over the environment, which wins over the file
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load(path: Path | None, **overrides: Any) -> Settings:
    """Settings from ``path`` (if given) with explicit overrides (from flags) on top."""
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    return Settings.model_validate(FromFile(**overrides).model_dump())
