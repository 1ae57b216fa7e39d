"""``python -m pipeline``'s help: every option says what it is and its default (issue #25)."""

from __future__ import annotations

import argparse

from pipeline.__main__ import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "python -m pipeline"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_every_option_of_every_command_has_help_and_states_its_default():
    commands = list(_parsers(build_parser()))
    assert len(commands) >= 11  # the nine commands, labelstudio's two subcommands
    for path, parser in commands:
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"{path} {name}: no help text"
            if action.default is not None:  # a computed default (None) is the text's to state
                assert "(default" not in action.help, f"{path} {name}: the formatter states it, not the text"
        text = parser.format_help()
        assert "``" not in text, f"{path}: reStructuredText in the help"
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {action.default})" in " ".join(text.split()), f"{path} {action.option_strings}"


def test_the_options_the_walkthrough_found_bare_now_explain_themselves():
    parser = build_parser()
    helps = {
        path: {a.dest: a.help for a in p._actions if not isinstance(a, argparse._SubParsersAction)}
        for path, p in _parsers(parser)
    }
    assert "TCP port" in helps["python -m pipeline labelstudio serve"]["port"]
    assert "hidden truth" in helps["python -m pipeline labelstudio simulate"]["oracle"]
    assert "seed" in helps["python -m pipeline labelstudio simulate"]["seed"]
    assert "params" in helps["python -m pipeline promote"]["params"]
    assert helps["python -m pipeline export-labels"]["format"] and helps["python -m pipeline preview"]["columns"]
