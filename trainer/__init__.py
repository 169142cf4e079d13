"""Adversarial training and robust evaluation of one architecture (torch only, never ray)."""
