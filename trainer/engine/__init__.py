"""The trainer's engine: pure Python and torch, no Django."""
