"""Labs: exercises generated from their solved versions, and the self-checks they run."""

from ftlab.labs.checks import LabCheckFailed, self_check, self_check_all

__all__ = ["LabCheckFailed", "self_check", "self_check_all"]
