"""Packaging for tukio (metadata here, tool configuration in pyproject.toml)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="tukio",
    version="2.0.0",
    description="An event-driven workflow engine library built on asyncio",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tukio", "tukio.*"]),
    package_data={"tukio": ["py.typed", "schema/*.json"]},
    install_requires=[],
    extras_require={"uvloop": ["uvloop>=0.19"]},
    entry_points={"console_scripts": ["tukio = tukio.cli:main"]},
    classifiers=[
        "Framework :: AsyncIO",
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Typing :: Typed",
    ],
)
