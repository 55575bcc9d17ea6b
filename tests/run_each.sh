#!/usr/bin/env bash
# The test suite, one pytest process per test file; exit 1 when any file fails.
#
# Why not one process: on 2026-12-02 the whole suite in one pytest process died with SIGSEGV (exit 139)
# at the start of tests/test_daemon.py's first in-process daemon run, after about 250 tests of other
# files had run in the same process; every file passes alone and in the halves tried. gdb showed the
# main thread in PyObject_IsTrue on the static small int 16 inside _PyRuntime: something native (OpenCV,
# ONNX Runtime, OpenVINO or torch, all loaded in that one process) wrote over it. Not yet bisected:
# see the session notes. The daemon runs as its own process in the field, as each file does here.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()
n=0
for f in tests/faults/test_*.py tests/test_*.py; do
  n=$((n + 1))
  python3 -m pytest -q -p no:cacheprovider "$f" "$@"
  rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then  # 5: nothing collected (e.g. all deselected by -k)
    failed+=("$f (exit $rc)")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  echo "${#failed[@]} of $n test files failed"
  exit 1
fi
echo "all $n test files passed"
