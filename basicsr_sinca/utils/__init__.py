"""Helpers shared across basicsr_sinca (no registrations happen here)."""
