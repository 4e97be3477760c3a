"""Drift: sample served traffic, compare it with a reference, and retrain, gate and promote when it moves."""
