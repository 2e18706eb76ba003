"""What every ``pgsessions`` subcommand shares: the common options and loading the config (below
:mod:`bot.cli`, which lists the subcommands, and below each subcommand's module)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TypeAlias

from bot.config import Config, ConfigError, load_config


def common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=os.environ.get("PGSESSIONS_CONFIG", "pgsessions.yml"),
                   help="YAML config file (default: $PGSESSIONS_CONFIG or ./pgsessions.yml)")
    p.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("LOG_FORMAT", "text"))
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))


def load_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"pgsessions: configuration error in {path}:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


# what ``add_subparsers()`` returns (a string: argparse's class is not subscriptable at run time)
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# how a subcommand module adds its parser: add_parser(subparsers, common_options)
AddParser = Callable[[Subparsers, Callable[[argparse.ArgumentParser], None]], None]
