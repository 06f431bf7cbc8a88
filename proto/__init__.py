"""proto: the wire between edge and cloud — schema (dancewire.proto + generated module), codec, keys.

Both sides import this package and nothing of each other. See codec.py for the envelope,
version and limits, keys.py for CURVE keys, regen.py to regenerate the generated module.
"""
