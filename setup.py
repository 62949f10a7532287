"""Builds zocket's cffi extension at install time; the metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["zocket/_build_libc.py:ffibuilder"])
