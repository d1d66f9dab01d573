#!/bin/sh
# System tools the tests use when they can be had: docker-compose validates deploy/docker-compose.yml.
# Installed with Debian's apt when running as root (CI); elsewhere the deploy tests check the YAML
# structure themselves and say so.
command -v docker-compose >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y -q --no-install-recommends docker-compose >/dev/null 2>&1 || \
       { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends docker-compose >/dev/null 2>&1; }; then
        echo "installed docker-compose"
        exit 0
    fi
fi
echo "docker-compose not available: tests/integration/test_deploy_files.py checks the compose YAML only"
