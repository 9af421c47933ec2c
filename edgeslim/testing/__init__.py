"""Toy models and helpers for tests (kept in the package so every test folder can reuse them)."""
