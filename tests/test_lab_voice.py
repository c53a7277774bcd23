"""Lab 3's held-out messages: new, and different from each other."""

from __future__ import annotations

from ftlab.labs.voice_lab import held_out_problems

DIFFERENT = [
    "Do you sell maps?",
    "My tent leaks at the seams.",
    "Where is AC-12345?",
    "Can I return boots bought in a store?",
    "Love your Denver store!",
]


def test_held_out_messages_must_differ_from_training_and_from_each_other():
    assert held_out_problems(DIFFERENT, ["Hi, do you ship to Canada?"]) == []
    copies = held_out_problems(["Do you sell maps?"] * 5, [])
    assert copies and all("another of your held-out messages" in p for p in copies)
    [near] = held_out_problems([*DIFFERENT[:4], "Do you sell maps??"], [])
    assert "'Do you sell maps??' is" in near and "'Do you sell maps?'" in near
    [trained] = held_out_problems(DIFFERENT, ["do you sell MAPS?"])
    assert "like the training message" in trained
