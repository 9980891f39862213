from setuptools import setup

# Metadata lives in setup.cfg; the package_dir mapping ships the project's
# root templates/ folder inside the installed package (SPEC §8).
setup(package_dir={"envpipe_agent.templates": "templates"})
