"""This module has a syntax error on line 4."""

def ok():
    return (1, 2
