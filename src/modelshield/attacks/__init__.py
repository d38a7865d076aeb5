"""Attacks that measure the protections: extraction, key recovery, fine-tuning, removal."""
