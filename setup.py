"""Builds the one compiled module, the HTTP/1.1 head fast lane; everything else is in
pyproject.toml. The build is optional: without a C compiler (or Python's headers) the
install goes on, and the proxy parses every head on its full path instead."""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            print(f"warning: the HTTP/1.1 fast lane was not compiled: {exc}", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"warning: {ext.name} was not compiled: {exc}", file=sys.stderr)


try:
    from Cython.Build import cythonize

    extensions = cythonize(
        [
            Extension(
                "mycelium.proxy.protocols._head_scan",
                ["src/mycelium/proxy/protocols/_head_scan.pyx"],
            )
        ],
        language_level=3,
        quiet=True,
    )
except ImportError:
    extensions = []

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
