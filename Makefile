# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench examples dist

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[terraform,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# Re-render Jenkinsfile.example, examples/gocd/ and examples/jenkins-library/ from examples/envpipe.yml
# (tests/test_generate_examples.py fails until they match).
examples: $(STAMP)
	$(BIN)/envpipe --config examples/envpipe.yml generate jenkins -o Jenkinsfile.example
	mkdir -p examples/gocd
	$(BIN)/envpipe --config examples/envpipe.yml generate gocd-xml -o examples/gocd/pipelines.xml
	$(BIN)/envpipe --config examples/envpipe.yml generate gocd-xml --full -o examples/gocd/cruise-config.xml
	$(BIN)/envpipe --config examples/envpipe.yml generate gocd-yaml -o examples/gocd/our-project.gocd.yaml
	$(BIN)/envpipe --config examples/envpipe.yml generate gocd-xml --full --template -o examples/gocd/cruise-config-template.xml
	$(BIN)/envpipe --config examples/envpipe.yml generate gocd-yaml --template -o examples/gocd/our-project-template.gocd.yaml
	$(BIN)/envpipe --config examples/envpipe.yml generate jenkins-library -o examples/jenkins-library
	$(BIN)/envpipe --config examples/envpipe.yml generate jenkins --use-library envpipe -o examples/jenkins-library/Jenkinsfile
	mkdir -p examples/on-demand
	$(BIN)/envpipe --config examples/envpipe.yml generate jenkins --job reap -o examples/on-demand/Jenkinsfile.reap
	$(BIN)/envpipe --config examples/envpipe.yml generate jenkins --job environments -o examples/on-demand/Jenkinsfile.environments
	$(BIN)/envpipe --config examples/envpipe.yml generate gocd-yaml --job reap -o examples/on-demand/our-project-reap.gocd.yaml
	$(BIN)/envpipe --config examples/envpipe.yml generate gocd-yaml --job environments -o examples/on-demand/our-project-environments.gocd.yaml

# envpipe against `aws s3 sync` on a local moto S3 (about 12 minutes on 2 cores), then
# the scale table (publish ... history at 100 to 20,000 files and 1,000/100,000 records);
# awscli is installed for the benchmark only. `make bench BENCH_ARGS=--quick`: both quick.
bench: $(STAMP)
	$(BIN)/pip install --quiet awscli
	$(BIN)/python benchmarks/s3_sync.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/scale.py $(BENCH_ARGS)

# The sdist and the wheel users install, in dist/ (the wheel is built from the sdist,
# so a file missing from the sdist shows here too).
dist: $(STAMP)
	$(BIN)/pip install --quiet build
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info
