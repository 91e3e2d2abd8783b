"""`make model` (scripts/train_tiny_synth.sh) against the committed model's card: the script is
valid bash, every spartan-train and spartan-synth call in it parses with the real tools'
arguments, and its stages run the steps the card says the committed weights were trained with.
Running the recipe itself takes hours; this catches a script and a card that drift apart."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from spartan_train.data.synth.generate import parse_args as synth_args
from spartan_train.train.trainer import build_parser, check_args

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "train_tiny_synth.sh"
CARD = REPO / "assets" / "models" / "tiny-synth" / "README.md"


def _calls(tool: str) -> list[list[str]]:
    """Each call of ``tool`` in the script as argv, with its shell variables filled in."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    finetune = re.search(r"finetune=\((.*?)\)", text, re.S)
    assert finetune, "the script no longer defines its fine-tuning flags"
    calls = []
    for line in text.splitlines():
        if f" {tool} " not in line:
            continue
        line = line.split(f" {tool} ", 1)[1].replace('"${finetune[@]}"', finetune.group(1))
        line = line.replace("$runs", "/tmp/runs").replace("$seed", "5")
        calls.append(shlex.split(line))
    return calls


def test_the_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_training_call_parses_and_passes_the_trainers_checks() -> None:
    calls = _calls("spartan-train")
    assert len(calls) == 5, "five training stages"
    for argv in calls:
        check_args(build_parser().parse_args(argv))


def test_every_generator_call_uses_training_seeds() -> None:
    from spartan_train.protocol import TRAINING_SEEDS

    calls = _calls("spartan-synth")
    assert calls
    for argv in calls:
        cfg, _ = synth_args(argv)
        assert cfg.seed in TRAINING_SEEDS


def test_the_stages_run_the_steps_of_the_model_card() -> None:
    script_steps = [int(build_parser().parse_args(a).max_steps) for a in _calls("spartan-train")]
    card_rows = re.findall(r"^\| (\d) \| .* \| (\d+) \|$", CARD.read_text(), re.M)
    assert [int(stage) for stage, _ in card_rows] == [1, 2, 3, 4, 5]
    assert script_steps == [int(steps) for _, steps in card_rows]
