# The two commands of the README, and the heavier ones beside them.
.PHONY: setup run test bench chart-scan image

setup:
	bash scripts/setup.sh

run: setup
	bash scripts/run.sh

test: setup
	bash scripts/test.sh

bench: setup
	bash scripts/bench.sh

chart-scan: setup
	bash scripts/chart_scan.sh

# The OCI image (root, no Docker engine): IMAGE_FLAGS="--gpu" and/or "--media DIR" (see scripts/image.sh).
image: setup
	bash scripts/image.sh $(IMAGE_FLAGS)
