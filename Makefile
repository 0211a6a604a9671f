# The two commands of the README, and the heavier ones beside them.
.PHONY: setup run test bench chart-scan

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
