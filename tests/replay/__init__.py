"""Replay histories of every saga path, their recorder and the replay tests."""
