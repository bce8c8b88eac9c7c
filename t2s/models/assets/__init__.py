"""Data files shipped with t2s.models (the tiny text encoder's vocabulary and tokenizer config).

A package so that setuptools' package-data patterns pick the files up.
"""
