"""A module with a UTF-8 BOM."""
import sys


def bom():
    return sys.version
