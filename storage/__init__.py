"""Persistence: schema (migrations), queries and export. The only package that writes SQL."""
