# The two commands of the README, and the heavier ones beside them.
.PHONY: setup run test test-cluster bench bench-engine-scale bench-llamacpp chart-scan image

setup:
	bash scripts/setup.sh

run: setup
	bash scripts/run.sh

test: setup
	bash scripts/test.sh

# A Ray cluster across hosts (issue 26): head, worker and outsider in network namespaces, root only (~7 min).
test-cluster: setup
	.venv/bin/python -m pytest -q -m cluster tests/media/test_cluster_join.py tests/media/test_cluster_serving.py \
		tests/media/test_cluster_firewall.py

bench: setup
	bash scripts/bench.sh

# The engine at gpt-oss-20b's shapes (2 layers): builds the bench model once (~4 min, ~15 GB peak), then ~30 min.
bench-engine-scale: setup
	PYTHONPATH=$(CURDIR) .venv/bin/python -m bench.engine_scale.run all

# llama.cpp as the CPU peer (issue 30); needs the llama-cpp-python sdist in var/llamacpp (see llamacpp.py)
bench-llamacpp: setup
	PYTHONPATH=$(CURDIR) nice -n 19 .venv/bin/python -m bench.engine_scale.llamacpp

chart-scan: setup
	bash scripts/chart_scan.sh

# The OCI image (root, no Docker engine): IMAGE_FLAGS="--gpu" and/or "--media DIR" (see scripts/image.sh).
image: setup
	bash scripts/image.sh $(IMAGE_FLAGS)
