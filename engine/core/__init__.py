"""The pure floor: the message model, errors, codecs and decoding. No I/O, no clock, no event loop.

`lanes/` and `actors/` import from here and from nowhere else in `engine`.
This module imports nothing, so importing one codec does not load the others.
"""
