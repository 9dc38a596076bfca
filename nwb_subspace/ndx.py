"""Placeholder; replaced by the extension classes."""
