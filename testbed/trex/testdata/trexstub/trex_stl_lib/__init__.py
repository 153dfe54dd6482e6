"""A stub of TRex's trex_stl_lib for testbed/trex/trex_test.go: NOT TRex.

See api.py.
"""
