"""Bundled reference models, installed as package data."""
