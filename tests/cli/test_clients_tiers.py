"""`modelshield clients add --trusted / --allowance`: the QUEEN tier is stored with the client and shown."""

from __future__ import annotations

import json

import pytest

from modelshield.cli import main
from modelshield.serve import ClientRegistry
from modelshield.state import SQLiteStateStore


def test_tier_options_are_stored(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    state = f"sqlite:{tmp_path / 'state.db'}"
    assert main(["clients", "add", "partner", "--trusted", "--state", state, "--key-out", str(tmp_path / "p.key"), "--json"]) == 0
    assert main(["clients", "add", "customer", "--allowance", "200", "--state", state, "--key-out", str(tmp_path / "c.key"),
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["clients", "show", "customer", "--state", state, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["allowance"] == 200 and shown["trusted"] is False
    registry = ClientRegistry(SQLiteStateStore(tmp_path / "state.db"))
    assert registry.show("partner").spec.trusted is True and registry.show("partner").spec.allowance is None
    assert main(["clients", "add", "bad", "--allowance", "-3", "--state", state, "--key-out", str(tmp_path / "b.key")]) != 0
    assert "allowance" in capsys.readouterr().err
