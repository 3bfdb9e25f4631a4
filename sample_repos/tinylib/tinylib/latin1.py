# -*- coding: latin-1 -*-
"""Café: a module in Latin-1 with a coding cookie."""

NAME = "café"


def greet():
    return NAME
