#!/bin/bash
# Deploy script.
source ./lib/common.sh
. ./lib/env.sh

build() {
  echo "building"
}

function deploy {
  build
  echo "deploying"
}

deploy
