#!/usr/bin/env bash
# The whole test suite against a real SeaweedFS (and moto for keys SeaweedFS cannot hold),
# with real FUSE mounts. Installs whatever is missing first. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || exit 1
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit $rc
