"""bnn_toroid: the geometry of binary and real-valued networks with symmetries removed."""
__version__ = "0.1.0"
