"""Test support shared by several test modules."""
