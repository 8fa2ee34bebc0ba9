"""`safehold completion`: the scripts come from the real parser, and bash completes with them
as a user would see it (the completion function run in a real bash)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SAFEHOLD = str(Path(sys.executable).parent / "safehold")


def _script(shell: str) -> str:
    done = subprocess.run([SAFEHOLD, "completion", shell], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _complete(tmp_path: Path, *words: str) -> list[str]:
    """What bash offers for ``safehold WORDS...`` (the last word is being typed)."""
    script = tmp_path / "safehold.bash"
    script.write_text(_script("bash"))
    words_q = " ".join(f"'{w}'" for w in ("safehold", *words))
    program = (
        f"source {script}; COMP_WORDS=({words_q}); COMP_CWORD={len(words)}; "
        'cd "$1"; _safehold; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", program, "bash", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completes_commands_subcommands_and_options(tmp_path: Path) -> None:
    assert _complete(tmp_path, "res") == ["restore", "restore-db"]
    assert _complete(tmp_path, "repo", "key", "r") == ["remove", "rotate"]
    assert _complete(tmp_path, "restore", "--veri") == ["--verify"]
    assert "--read-data-subset" in _complete(tmp_path, "verify", "--")
    # options before the command do not lose the command's place
    assert _complete(tmp_path, "--json", "repo", "") == ["info", "init", "key", "unlock"]


def test_bash_completes_file_names_where_a_value_is_expected(tmp_path: Path) -> None:
    (tmp_path / "target-dir").mkdir()
    assert _complete(tmp_path, "restore", "latest", "targ") == ["target-dir"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str) -> None:
    text = _script(shell)
    for command in ("restore", "restore-db", "backup", "verify", "completion"):
        assert command in text
    if shell == "zsh":
        assert text.startswith("autoload -U +X bashcompinit && bashcompinit\n")
        assert "complete -o filenames -F _safehold safehold" in text
    else:
        assert "complete -c safehold -n '__fish_use_subcommand' -a restore" in text
        assert "complete -c safehold -n '__fish_seen_subcommand_from restore' -l verify" in text
        line = (
            "complete -c safehold -n '__fish_seen_subcommand_from repo && "
            "__fish_seen_subcommand_from key' -l help"
        )
        assert line in text


def test_an_unknown_shell_is_refused() -> None:
    done = subprocess.run([SAFEHOLD, "completion", "tcsh"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "invalid choice: 'tcsh'" in done.stderr
