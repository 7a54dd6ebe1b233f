"""The rules of the product. Services raise named domain errors and never commit."""
