"""Controller settings from the environment (KAI_ prefix) and `.env`."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KaiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAI_", env_file=".env", extra="ignore")

    state_dir: Path = Field(Path("~/.kai"), description="where kai keeps its state")
    api_token: SecretStr | None = Field(None, description="bearer token of the REST API")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)
    node_lock_lease_s: int = Field(
        120, ge=3, le=3600,
        description="lease of the lock kai keeps on each node while a run works on it; a dead "
                    "controller's lock is taken over this long after its last renewal")
    # Prefect's own variable, read as-is (no KAI_ prefix).
    prefect_api_url: str | None = Field(
        None, validation_alias=AliasChoices("PREFECT_API_URL", "prefect_api_url"))

    def state_path(self) -> Path:
        return self.state_dir.expanduser()
