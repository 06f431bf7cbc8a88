"""The README's Quick start is the two commands CI and a newcomer run: keep them in step."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = _quick_start_commands()
    assert commands == ["./quickstart run", "./quickstart test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "export "))]
    assert ci == [commands[1]]


def test_quickstart_hands_over_to_the_makefile_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "setup", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    bad = subprocess.run([str(ROOT / "quickstart"), "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage: ./quickstart run|test" in bad.stderr
    # what `run` would do, without doing it: make's dry run of the main job's recipe
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "run"], capture_output=True, text=True)
    assert dry.returncode == 0 and "dancewire up" in dry.stdout
