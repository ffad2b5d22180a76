"""Maps the source folders onto the ``ddkit`` import package; everything else is in
pyproject.toml. Every sub-folder with an ``__init__.py`` becomes a package, so adding a
module or sub-package needs no edit here."""

from setuptools import find_packages, setup

ROOTS = {"ddkit": "core", "ddkit.plugins": "plugins", "ddkit.contrib": "contrib"}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder, exclude=["example_plugin*"])]

setup(packages=packages, package_dir=package_dir)
