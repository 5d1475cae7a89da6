"""What every CLI command shares: the configuration and where the data lives."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from actors import parse_moment
from engine.core.decode import Decoder
from engine.core.errors import ConfigError
from engine.infra.config import DEFAULT_CONFIG_PATH, Config, load_config
from lanes import Classifier

__all__ = ["DATA_OPTION", "JSON_OPTION", "Context", "emit_json", "strict_moment"]

DATA_OPTION = click.option(
    "--data",
    "data",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="VIGIL_DATA",
    help="The node's data directory (default: $VIGIL_DATA, else node.data_dir from the configuration).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def emit_json(data: Any) -> None:
    """One JSON document (or one NDJSON line) on stdout."""
    sys.stdout.write(msgspec.json.encode(data).decode() + "\n")


class Context:
    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._config

    def join_cluster(self, nats: str | None, node_id: str | None) -> None:
        """`--nats URL[,URL...]` turns cluster mode on with those servers; `--node-id` names this node."""
        config = self.config
        if nats:
            servers = tuple(url.strip() for url in nats.split(",") if url.strip())
            cluster = msgspec.structs.replace(config.cluster, enabled=True, servers=servers)
            config = msgspec.structs.replace(config, cluster=cluster)
        if node_id:
            config = msgspec.structs.replace(config, node=msgspec.structs.replace(config.node, id=node_id))
        self._config = config

    def decoder(self) -> Decoder:
        return Decoder(Classifier(self.config.lanes.rules), self.config.ingest.charsets())

    def base_dir(self) -> Path:
        """The configuration file's directory: relative paths in it are relative to this."""
        return (self.config_path or DEFAULT_CONFIG_PATH).resolve().parent

    def data_dir(self, option: Path | None) -> Path:
        """`--data` if given, else the config's data_dir (relative to the config file)."""
        if option is not None:
            return option
        return self.base_dir() / self.config.node.data_dir


def strict_moment(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A time option (`--as-of`, `--since`) read strictly (ISO 8601, UTC without an offset); anything else refused."""
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None
