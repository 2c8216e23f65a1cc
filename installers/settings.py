"""Controller settings from the environment (KAI_ prefix) and `.env`, and the one place that decides
which Prefect server a command talks to (`resolve_settings`)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVE_FILE = "serve.json"  # <state dir>/serve.json: written by a running `kai serve`, read by the CLI


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
    local_agent_command: str = Field(
        "", description="argv (shell words) put in front of the agent of a node marked "
                        "`connection: local`; empty: the agent runs on this machine as it is "
                        "(installers/ssh/local.py). The end-to-end tests point it at a booted "
                        "test host's namespaces")
    # Prefect's own variable, read as-is (no KAI_ prefix).
    prefect_api_url: str | None = Field(
        None, validation_alias=AliasChoices("PREFECT_API_URL", "prefect_api_url"))

    def state_path(self) -> Path:
        return self.state_dir.expanduser()

    def local_agent_prefix(self) -> tuple[str, ...]:
        try:
            return tuple(shlex.split(self.local_agent_command))
        except ValueError as exc:  # an unclosed quote
            raise ValueError(f"KAI_LOCAL_AGENT_COMMAND: not shell words ({exc}): "
                             f"{self.local_agent_command!r}") from None


class NoPrefectServer(RuntimeError):
    """A command needs a Prefect server (runs, logs, Secret blocks) and none is configured or running."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def running_serve_url(state_dir: Path) -> tuple[str | None, str]:
    """(the Prefect API URL the running `kai serve` recorded, or None; why not, when None)."""
    path = state_dir / SERVE_FILE
    try:
        served = json.loads(path.read_text(encoding="utf-8"))
        url, pid = served["prefect_api_url"], int(served["pid"])
    except FileNotFoundError:
        return None, f"no `kai serve` is running ({path} does not exist)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{path} is unreadable ({type(exc).__name__}: {exc})"
    # a `kai serve` killed with SIGKILL cannot remove its file: its URL would lead nowhere
    if not _process_alive(pid):
        return None, f"the `kai serve` recorded in {path} (pid {pid}) is no longer running"
    return url, ""


def resolve_settings(*, need_prefect: bool = False, use_running_serve: bool = True) -> KaiSettings:
    """kai's settings for any command, with the Prefect API URL resolved, in this order:

    1. PREFECT_API_URL in the environment,
    2. PREFECT_API_URL in `.env` in the working directory,
    3. the URL the running `kai serve` recorded in <state dir>/serve.json (unless
       `use_running_serve` is False: `kai serve` itself decides whether to start a server).

    The URL found is exported as PREFECT_API_URL so that Prefect's client, imported afterwards,
    uses it: without it Prefect would start a temporary server of its own, which holds no runs
    and no Secret blocks. With `need_prefect` and no URL, raises NoPrefectServer saying how to
    get one.
    """
    settings = KaiSettings()
    url = settings.prefect_api_url
    why_not = ""
    if not url and use_running_serve:
        url, why_not = running_serve_url(settings.state_path())
    if url:
        os.environ["PREFECT_API_URL"] = url
        return settings.model_copy(update={"prefect_api_url": url})
    if need_prefect:
        raise NoPrefectServer(
            f"no Prefect server: {why_not or 'PREFECT_API_URL is not set'}. Start one with "
            "`kai serve` (same KAI_STATE_DIR), or set PREFECT_API_URL in the environment or in "
            "./.env to a running Prefect server's API (e.g. http://127.0.0.1:4200/api)")
    return settings
