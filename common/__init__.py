"""Shared by two or more milestones: devices and precision, data, logging, config, checkpoints."""

from .errors import UserError

__all__ = ["UserError"]
