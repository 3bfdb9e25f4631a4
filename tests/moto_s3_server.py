"""moto's standalone server (`python -m moto.server`, same arguments), for the tests' S3.

Owns: one change to moto's request dispatch, nothing else. moto 5.2's server looks up, on every
request, whether the Host header names one of its service packages by listing moto's ~200 package
folders (`moto.backends.list_of_moto_modules`: a listdir and an isdir each); measured here, that
was half of the server's CPU (~2.5 of ~5 ms a request) and ~23 CPU-s of a default test run. The
folders do not change while the server runs, so the list is read once. S3's behaviour (conditional
puts included) is moto's own.
Must not touch: snakebatch (this is the tests' server, not a client).
"""

from moto import backends
from moto.server import main

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MODULES

if __name__ == "__main__":
    main()
