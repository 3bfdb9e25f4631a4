#!/bin/sh
# build the docs
set -e

echo "building"
