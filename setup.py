from setuptools import find_packages, setup

# Metadata lives in setup.cfg. The project's root templates/ folder ships inside the
# installed package as envpipe_agent.templates (SPEC §8); find_packages cannot see a
# package mapped from elsewhere, so it is the one package named here.
setup(
    package_dir={"envpipe_agent.templates": "templates"},
    packages=[*find_packages(include=["envpipe_agent", "envpipe_agent.*"]), "envpipe_agent.templates"],
)
