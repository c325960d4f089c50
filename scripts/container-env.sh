#!/usr/bin/env bash
# A Docker engine and the images that the Dockerfile and docker-compose.yml start from, for the
# container tests (tests/deploy/container/). Idempotent: every step is skipped when already done.
#   1. the engine: installed from Debian packages (docker.io, docker-compose) when missing;
#   2. dockerd: started when no engine answers, without touching the host firewall (--iptables=false:
#      containers reach each other and 127.0.0.1-published ports, not the outside; builds use the host
#      network), logging to $DOCKERD_LOG;
#   3. base images: pulled; where no registry is reachable, stand-ins are made under the same names
#      from Debian packages (mmdebstrap), so the Dockerfile and compose file stay exactly what a user runs:
#      python:3.11-slim (Debian's Python 3.11), and compose's Azurite image (Debian's Node.js + the
#      azurite npm package pinned by package-lock.json).
# Exits non-zero, with the reason on stderr, if any step fails; the container tests then skip.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd-container-env.log}
ENGINE_WAIT_S=120
PULL_TIMEOUT_S=120
PYTHON_IMAGE=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' Dockerfile | sort -u)
AZURITE_IMAGE=$(sed -n 's/^ *image: *\(.*azurite.*\)$/\1/p' docker-compose.yml)
STANDIN_NOTE="stand-in made by scripts/container-env.sh from Debian packages"
# As the Azurite image's own default command: all three services, listening on every interface.
AZURITE_CMD='CMD ["azurite", "-l", "/data", "--blobHost", "0.0.0.0", "--queueHost", "0.0.0.0", '
AZURITE_CMD+='"--tableHost", "0.0.0.0"]'

say() { echo "container-env: $*" >&2; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  ((${#missing[@]} == 0)) && return
  if ! command -v apt-get >/dev/null || ((EUID != 0)); then
    say "missing ${missing[*]} and cannot apt-get install them"
    return 1
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_engine() {
  docker info >/dev/null 2>&1 && return
  ((EUID == 0)) || { say "no Docker engine answers and only root can start dockerd"; return 1; }
  say "starting dockerd (log: $DOCKERD_LOG)"
  setsid dockerd --iptables=false >>"$DOCKERD_LOG" 2>&1 < /dev/null &
  local deadline=$((SECONDS + ENGINE_WAIT_S))
  until docker info >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { say "dockerd did not answer within ${ENGINE_WAIT_S} s; see $DOCKERD_LOG"; return 1; }
    sleep 1
  done
}

# Where the host reaches PyPI through its own index, builds in the stand-in use the same one.
host_pip_index() {
  local index=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}
  [[ $index == http* ]] && printf '%s' "$index"
}

# Debian bookworm's Python 3.11 as python:3.11-slim: `python` on PATH, pip trusting this machine's CA bundle.
make_python_standin() {
  local image=$1 work=$2 index
  local changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
                 --change 'ENV LANG=C.UTF-8' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt'
                 --change 'CMD ["python3"]')
  if index=$(host_pip_index); then changes+=(--change "ENV PIP_INDEX_URL=$index"); fi
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,passwd,ca-certificates \
    --customize-hook='copy-in /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs' bookworm "$work/rootfs.tar"
  docker import --message "$STANDIN_NOTE" "${changes[@]}" "$work/rootfs.tar" "$image" >/dev/null
}

# Debian bookworm's Node.js with azurite under /opt/azurite, installed by the host's npm from package-lock.json.
make_azurite_standin() {
  local image=$1 work=$2
  mkdir -p "$work/stage/opt/azurite"
  cp package.json package-lock.json "$work/stage/opt/azurite"
  npm ci --prefix "$work/stage/opt/azurite" --ignore-scripts --no-audit --no-fund --loglevel=error
  mmdebstrap --quiet --variant=minbase --include=nodejs,ca-certificates \
    --customize-hook="sync-in $work/stage /" bookworm "$work/rootfs.tar"
  docker import --message "$STANDIN_NOTE" \
    --change 'ENV PATH=/opt/azurite/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'WORKDIR /opt/azurite' --change 'EXPOSE 10000 10001 10002' \
    --change "$AZURITE_CMD" \
    "$work/rootfs.tar" "$image" >/dev/null
}

# In a subshell, so that both images can be made at once, each with its own scratch folder.
ensure_image() (
  local image=$1 maker=$2
  docker image inspect "$image" >/dev/null 2>&1 && exit 0
  if timeout "$PULL_TIMEOUT_S" docker pull --quiet "$image" >/dev/null 2>&1; then exit 0; fi
  say "cannot pull $image: making a stand-in"
  local started=$SECONDS work
  # A stand-in is imported only from a complete root filesystem, so a failed attempt leaves no image behind.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$maker" "$image" "$work"
  say "stand-in $image made in $((SECONDS - started)) s"
)

install_packages
start_engine
ensure_image "$PYTHON_IMAGE" make_python_standin &
python_job=$!
ensure_image "$AZURITE_IMAGE" make_azurite_standin &
azurite_job=$!
failed=0
wait "$python_job" || failed=1
wait "$azurite_job" || failed=1
((failed == 0)) || { say "could not provide the base images"; exit 1; }
say "ready: $(docker version --format 'engine {{.Server.Version}}'), images $PYTHON_IMAGE and $AZURITE_IMAGE"
