"""Task spec YAML files, installed as package data."""
