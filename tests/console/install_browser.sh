#!/bin/sh
# The web console's browser tests drive the system Chromium through its chromedriver (Debian packages
# chromium and chromium-driver). `make test` runs this first: as root with apt-get, it installs them
# when missing; otherwise (or when the install fails) it says so and the browser tests skip with the
# same advice. It never fails the test run.
if [ -x "${TLREC_CHROMIUM:-/usr/bin/chromium}" ] && [ -x "${TLREC_CHROMEDRIVER:-/usr/bin/chromedriver}" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver for the web console's browser tests (apt-get)"
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; then
        exit 0
    fi
    echo "note: apt-get could not install chromium + chromium-driver: the browser tests will be skipped"
else
    echo "note: no chromium + chromedriver: the browser tests will be skipped" \
         "(as root: apt-get install chromium chromium-driver)"
fi
exit 0
