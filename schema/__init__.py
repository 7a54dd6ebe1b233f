"""Strawberry types: thin dataclasses describing what the SPA can ask for."""
