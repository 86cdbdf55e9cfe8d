"""`--help` teaches: every command has a summary, a paragraph and examples."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from mycelium.cli.main import COMMANDS, app

runner = CliRunner()


def test_the_root_help_lists_every_verb_in_teaching_order() -> None:
    result = runner.invoke(app, ["--help"])

    assert result.exit_code == 0
    commands_panel = result.stdout[result.stdout.index("Commands") :]
    # a verb starts its row (a summary may use the word: "Golden metrics per...")
    positions = [
        re.search(rf"^\W*{name} ", commands_panel, re.MULTILINE).start()  # type: ignore[union-attr]
        for name in COMMANDS
    ]
    assert positions == sorted(positions)
    for option in ("--controller", "MYC_CONTROLLER", "--home", "MYC_HOME"):
        assert option in result.stdout


def test_myc_without_a_verb_shows_the_help() -> None:
    result = runner.invoke(app, [])

    assert "Usage" in result.output
    assert "apply" in result.output


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_a_summary_a_paragraph_and_examples(command: str) -> None:
    result = runner.invoke(app, [command, "-h"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    doc = COMMANDS[command].__doc__ or ""
    summary, paragraph, *_rest = [p.strip() for p in doc.split("\n\n")]
    assert "\n" not in summary
    assert summary.endswith(".")
    assert len(paragraph.split()) >= 20, "the paragraph should explain, not restate"
    assert "Examples" in result.stdout
    assert f"myc {command}" in result.stdout
    assert summary in result.stdout


def test_prose_is_reflowed_and_examples_keep_their_lines() -> None:
    result = runner.invoke(app, ["get", "--help"], env={"COLUMNS": "200"})

    # One paragraph of the docstring, spread over several source lines, is one line here.
    assert "in every namespace with -A, or shows one by NAME" in result.stdout
    assert "  myc get httproutes --watch" in result.stdout
