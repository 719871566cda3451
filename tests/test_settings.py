"""Where the ledger and the user's price file live by default: the same folders platformdirs names."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from ccledger.settings import default_config_dir, default_data_dir

_VARS = ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"XDG_CONFIG_HOME": "/srv/conf", "XDG_DATA_HOME": "/srv/data"},
        {"XDG_CONFIG_HOME": "", "XDG_DATA_HOME": ""},
        {"XDG_CONFIG_HOME": "relative/conf", "XDG_DATA_HOME": "relative/data"},
        {"HOME": "relative-home"},
        {"HOME": "/home/someone/", "XDG_DATA_HOME": "/d/"},
        {"HOME": "//", "XDG_CONFIG_HOME": "   "},
        {"XDG_CONFIG_HOME": " /srv/conf", "XDG_DATA_HOME": "//srv//data"},
    ],
)
def test_default_dirs_are_platformdirs_answers(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in _VARS[1:]:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert default_config_dir() == Path(platformdirs.user_config_dir("ccledger", appauthor=False))
    assert default_data_dir() == Path(platformdirs.user_data_dir("ccledger", appauthor=False))


@pytest.mark.skipif(sys.platform != "linux", reason="the short path is Linux's")
def test_linux_answers_without_importing_platformdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # importing it now raises ImportError
    assert default_config_dir() == tmp_path / ".config" / "ccledger"
    assert default_data_dir() == tmp_path / ".local" / "share" / "ccledger"
